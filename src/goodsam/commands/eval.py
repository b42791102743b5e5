"""``goodsam eval``: per-class IoU of a model on a labelled set (paper table, JSON, confusion PNG)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from goodsam.commands.options import SCALE_HELP, STRICT_HELP, progress_bar
from goodsam.errors import BatchError, ConfigError


def _size(height: int | None, width: int | None) -> tuple[int, int] | None:
    if (height is None) != (width is None):
        raise ConfigError("give both --height and --width to resize, or neither")
    if height is None or width is None:
        return None
    if height < 1 or width < 1:
        raise ConfigError("--height and --width must be positive")
    return (height, width)


def eval_command(
    model: str = typer.Argument(..., help="Zoo name (espnetv2-s2.0, segformer-b0…), checkpoint dir, "
                                           "SegFormer hub id/dir or .onnx file."),
    dataset: Path | None = typer.Option(None, "--dataset",
                                        help="Dataset root (DensePASS, WildPASS, Cityscapes)."),
    layout: str = typer.Option("auto", help="auto, densepass, wildpass, cityscapes or folder."),
    split: str = typer.Option("val", help="Split folder under leftImg8bit/ and gtFine/."),
    images: Path | None = typer.Option(None, "--images", help="Folder pair: image folder or one image."),
    labels: Path | None = typer.Option(None, "--labels", help="Folder pair: the label folder."),
    label_pattern: str = typer.Option("{stem}.png", help="Label file name of image <stem>.<ext>, "
                                                          "e.g. '{stem}_trainIds.png'."),
    include: str | None = typer.Option(None, help="Only images whose file name matches this glob."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate at most this many images."),
    class_map: str = typer.Option("cityscapes19", "--class-map",
                                  help="cityscapes19, densepass13, categories7 or a .json/.yaml file."),
    window: int | None = typer.Option(None, min=1, help="Sliding-window width (default: whole image)."),
    stride: int | None = typer.Option(None, min=1, help="Sliding-window stride (default: window/2)."),
    wrap: bool = typer.Option(False, help="Let windows wrap around the 360° seam."),
    height: int | None = typer.Option(None, help="Resize images (bilinear), labels (nearest) to H."),
    width: int | None = typer.Option(None, help="… and width W."),
    scale: str | None = typer.Option(None, help=SCALE_HELP),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads (default: PyTorch's choice)."),
    weights: Path | None = typer.Option(None, help="Explicit weight file for a zoo model."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default outputs/eval/<model>)."),
    name: str | None = typer.Option(None, help="Method name in the table (default: the model)."),
    save_predictions: bool = typer.Option(False, help="Also write predicted trainIds to OUT/predictions."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Evaluate MODEL on a labelled set: markdown table, results.json and confusion.png in --out."""
    from goodsam.evaluation import evaluate, get_class_map, open_labelled_set
    from goodsam.evaluation.evaluate import check_labels
    from goodsam.inference import default_scale, load_model, set_threads
    from goodsam.segmenters.scale import parse_scale

    size = _size(height, width)
    given_scale = parse_scale(scale) if scale is not None else None
    if stride is not None and window is None:
        raise ConfigError("--stride needs --window")
    mapping = get_class_map(class_map)
    labelled = open_labelled_set(dataset, layout, split, images, labels, label_pattern, include, limit)
    failures = check_labels(labelled, mapping, strict=strict)  # before the model loads
    if len(failures) == len(labelled):
        raise BatchError("images", len(labelled), failures)
    set_threads(threads)
    loaded = load_model(model, device=device, weights=weights, onnx_threads=threads)
    input_scale = default_scale(loaded, given_scale)  # recorded in results.json
    out = out or Path("outputs") / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or model)
    config = {
        "model": model, "dataset": labelled.describe(), "class_map": mapping.name,
        "inference": {"mode": "sliding" if window else "whole", "window": window,
                      "stride": (stride or window // 2) if window else None, "wrap": wrap,
                      **({"scale": input_scale} if input_scale != 1.0 else {})},
        "size": list(size) if size else None, "device": device,
    }
    typer.echo(f"evaluating {model} on {len(labelled)} images of {labelled.source} ({labelled.layout}), "
               f"class map {mapping.name}", err=True)
    try:
        result = evaluate(loaded, labelled, mapping, window=window, stride=stride, wrap=wrap, size=size,
                          scale=input_scale, config=config, progress=progress_bar("eval"),
                          label_failures=failures, strict=strict,
                          save_predictions=out / "predictions" if save_predictions else None)
    except BatchError as exc:
        if exc.result.n_images:  # the scores of the images that were done, with the failed ones listed
            _report(exc.result, out, name or model)
        raise
    _report(result, out, name or model)


def _report(result, out: Path, name: str) -> None:
    from goodsam.evaluation import write_report

    paths = write_report(result, out, name)
    typer.echo(paths["markdown"].read_text().rstrip())
    typer.echo(f"wrote {paths['markdown']}, {paths['json']}, {paths['confusion']}", err=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
