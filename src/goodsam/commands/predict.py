"""``goodsam predict``: label PNGs, colour overlays and an HTML gallery for images or folders."""

from __future__ import annotations

from pathlib import Path

import typer

from goodsam.commands.options import SCALE_HELP, STRICT_HELP, progress_bar
from goodsam.errors import BatchError, ConfigError


def predict_command(
    model: str = typer.Argument(..., help="Zoo name, checkpoint dir, SegFormer hub id/dir or .onnx file."),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
    out: Path = typer.Option(Path("outputs/predict"), "--out", help="Output folder."),
    window: int | None = typer.Option(None, min=1, help="Sliding-window width (default: whole image)."),
    stride: int | None = typer.Option(None, min=1, help="Sliding-window stride (default: window/2)."),
    wrap: bool = typer.Option(False, help="Let windows wrap around the 360° seam."),
    height: int | None = typer.Option(None, min=1, help="Run at this height (outputs keep the input size)."),
    width: int | None = typer.Option(None, min=1, help="Run at this width (one alone keeps the aspect)."),
    scale: str | None = typer.Option(None, help=SCALE_HELP),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads (default: PyTorch's choice)."),
    weights: Path | None = typer.Option(None, help="Explicit weight file for a zoo model."),
    overlays: bool = typer.Option(True, help="Write colour overlays with a legend."),
    gallery: bool = typer.Option(True, help="Write OUT/index.html (implies overlays)."),
    alpha: float = typer.Option(0.5, min=0.0, max=1.0, help="Overlay opacity."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Segment images: OUT/labels/*.png (trainIds), OUT/overlays/*.png, OUT/index.html."""
    from goodsam.inference import load_model, set_threads
    from goodsam.predict import collect_inputs, predict_images
    from goodsam.segmenters.scale import parse_scale

    if stride is not None and window is None:
        raise ConfigError("--stride needs --window")
    given_scale = parse_scale(scale) if scale is not None else None
    paths = collect_inputs(inputs)  # bad inputs fail before the model loads
    set_threads(threads)
    loaded = load_model(model, device=device, weights=weights, onnx_threads=threads)
    try:
        results = predict_images(loaded, paths, out, window=window, stride=stride, wrap=wrap, height=height,
                                 width=width, scale=given_scale, overlays=overlays, gallery=gallery,
                                 alpha=alpha, title=f"goodsam predictions: {model}",
                                 progress=progress_bar("predict"), strict=strict)
    except BatchError as exc:
        _echo_results(exc.result, out if gallery and exc.result else None)
        raise
    _echo_results(results, out if gallery else None)


def _echo_results(results: list, gallery: Path | None) -> None:
    for result in results:
        typer.echo(f"{result.source} -> {result.labels} ({', '.join(result.classes[:6])}"
                   f"{', …' if len(result.classes) > 6 else ''})")
    if gallery is not None:
        typer.echo(f"gallery: {gallery / 'index.html'}")


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)
