"""``goodsam weights list|fetch``: the model zoo's weight files."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from goodsam import assets
from goodsam.errors import AssetError

weights_app = typer.Typer(help="List and obtain pretrained weights.", no_args_is_help=True)


@weights_app.command("list")
def list_weights(verify: bool = typer.Option(True, help="Check sha256 of present files.")) -> None:
    """Show every known weight, where it is (or would come from) and whether it is valid."""
    table = Table(title="goodsam weights")
    for column in ("name", "file", "status", "location / origin"):
        table.add_column(column)
    for name, spec in assets.WEIGHTS.items():
        found = assets.locate_weight(name)
        if found is None:
            status, where = "missing", spec.origin
        else:
            label, path = found
            where = f"{path} ({label})"
            status = "present"
            if verify and spec.sha256:
                try:
                    assets.verify_weight(path, spec)
                    status = "ok (sha256)"
                except AssetError:
                    status = "CORRUPT (sha256 mismatch)"
            elif spec.sha256 is None:
                status = "present (no checksum known)"
        table.add_row(name, spec.filename, status, where)
    Console(width=200).print(table)
    typer.echo("SegFormer models (segformer-b0..b5) load from the Hugging Face hub cache or a local folder.")


@weights_app.command("fetch")
def fetch(name: str = typer.Argument(..., help="Weight name, e.g. mobile_sam or espnetv2-s2.0.")) -> None:
    """Obtain a weight into the user cache (~/.cache/goodsam/weights), verifying its sha256."""
    found = assets.locate_weight(name)
    if found is not None:
        assets.verify_weight(found[1], assets.weight_spec(name))
        typer.echo(f"{name}: already present at {found[1]} ({found[0]})")
        return
    path = assets.fetch_weight(name)
    typer.echo(f"{name}: fetched to {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
