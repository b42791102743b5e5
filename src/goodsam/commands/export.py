"""``goodsam export``: a model to ONNX, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import typer

PARITY_IMAGE = "panoramas/pass_1027U_0.png"


def export_command(
    model: str = typer.Argument(..., help="Zoo name, checkpoint dir or SegFormer hub id/dir."),
    out: Path = typer.Option(..., "--out", help="The .onnx file to write."),
    image: Path | None = typer.Option(None, help=f"Parity-check image (default: {PARITY_IMAGE})."),
    height: int = typer.Option(400, min=1, help="Export/check height."),
    width: int = typer.Option(2048, min=1, help="Export/check width (dynamic in the graph)."),
    opset: int = typer.Option(17, min=11, help="ONNX opset."),
    dynamic_height: bool = typer.Option(False, help="Make the height dynamic too."),
    check: bool = typer.Option(True, help="Check ONNX Runtime against PyTorch (fails on a mismatch)."),
    weights: Path | None = typer.Option(None, help="Explicit weight file for a zoo model."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads (default: PyTorch's choice)."),
) -> None:
    """Export MODEL to ONNX with dynamic batch and width; verify logits and argmax against PyTorch."""
    from goodsam.assets import find_asset
    from goodsam.export import ExportError, export_checked
    from goodsam.imageio import load_rgb
    from goodsam.inference import load_model, set_threads

    set_threads(threads)
    picture = load_rgb(find_asset(PARITY_IMAGE, explicit=image)) if check else None
    loaded = load_model(model, weights=weights)
    try:
        path, reports = export_checked(loaded, out, picture, height, width, opset, dynamic_height, threads)
    except ExportError:
        typer.echo(f"wrote {out}; parity check FAILED")
        raise
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB; inputs: float32 RGB 0..255, "
               f"dynamic batch{', height' if dynamic_height else ''} and width)")
    for size, report in reports:
        typer.echo(f"parity at {size}: {report.summary()} -> ok")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
