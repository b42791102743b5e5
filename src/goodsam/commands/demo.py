"""``goodsam demo``: the README's main job (:func:`goodsam.demo.run_demo`) from the command line."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("outputs/demo"), "--out", help="Output folder (rerun to resume)."),
    steps: int | None = typer.Option(None, "--steps", help="Training steps (default: the config's)."),
    config: str = typer.Option("nano-s0.5", "--config",
                               help="Training setup (nano-s0.5, nano-s1.0; nano-s0.5-paper: no safeguards)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key (repeatable)."),
    panoramas: Path | None = typer.Option(None, help="Folder of panoramas (default: the bundled ones)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    workers: int | None = typer.Option(None, help="CPU processes (default: one per core, up to the batch)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Nano GoodSAM on the bundled real panoramas: masks, training, colour overlays (CPU, resumable)."""
    from goodsam.demo import run_demo  # deferred: torch

    summary = run_demo(out, steps, config, tuple(overrides), device, progress, panoramas, workers,
                       log=typer.echo)
    first, last = summary["first"], summary["last"]
    if first and last:
        typer.echo(f"[demo] loss (student + TA): step {first['step']} {first['total']:.4f} -> "
                   f"step {last['step']} {last['total']:.4f}  (student {first['student']:.4f} -> "
                   f"{last['student']:.4f}, TA {first['ta']:.4f} -> {last['ta']:.4f})")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings"].items())
    typer.echo(f"[demo] time: {times}")
    typer.echo(f"[demo] overlays: {out / 'predictions' / 'overlays'} "
               f"(gallery {out / 'predictions' / 'index.html'}); "
               f"before training: {out / 'predictions_before'}; loss curve: {out / 'run' / 'loss_curve.png'}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
