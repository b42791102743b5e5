"""Evaluation reports: a markdown table in the paper's layout, JSON, and a confusion-matrix PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from goodsam.evaluation.evaluate import EvalResult
from goodsam.fileio import atomic_write

ABSENT = "—"


def _cell(value: float | None) -> str:
    return ABSENT if value is None else f"{value:.1f}"


def markdown_table(result: EvalResult, method: str) -> str:
    """One row per method: ``| Method | mIoU | <class> … |`` (percent, 1 decimal, absent = —)."""
    per_class = result.per_class()
    header = ["Method", "mIoU", *per_class]
    row = [method, _cell(result.to_json()["miou"]), *(_cell(v) for v in per_class.values())]
    align = ["---", *(["---:"] * (len(header) - 1))]
    lines = ["| " + " | ".join(cells) + " |" for cells in (header, align, row)]
    json_view = result.to_json()
    note = (f"\n{result.n_images} images, class map `{result.class_map.name}`; mIoU over the "
            f"{json_view['classes_present']} classes present in the labels ({ABSENT} = no labelled pixels); "
            f"pixel accuracy {_cell(json_view['pixel_accuracy'])} %.")
    if json_view["predicted_only"]:
        only = ", ".join(json_view["predicted_only"])
        note += (f" Predicted but never labelled (left out of the mean): {only}; mIoU counting them as 0: "
                 f"{_cell(json_view['miou_union'])}.")
    return "\n".join(lines) + "\n" + note + "\n"


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each ground-truth row divided by its pixel count (rows without pixels stay 0)."""
    totals = matrix.sum(1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)


def plot_confusion(result: EvalResult, path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix with class names, as a PNG."""
    import matplotlib

    matrix = result.confusion.counts.numpy()  # with the "unmapped" column, so rows sum to 1
    normalised = row_normalised(matrix)[:, : result.class_map.num_classes]
    names = list(result.class_map.names)
    n = len(names)
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    side = max(4.0, 0.45 * n + 2.5)
    figure = Figure(figsize=(side + 1.0, side), dpi=110)
    axes = figure.add_subplot()
    image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(n), names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if normalised[i, j] >= 0.005:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    axes.text(j, i, f"{100 * normalised[i, j]:.0f}", ha="center", va="center", fontsize=6,
                              color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of ground-truth pixels")
    title = title or f"confusion (row-normalised), mIoU {_cell(result.to_json()['miou'])}"
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png")
    return path


def write_report(result: EvalResult, out_dir: str | Path, method: str) -> dict[str, Path]:
    """Write ``results.md``, ``results.json`` and ``confusion.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json", "confusion": out / "confusion.png"}
    paths["markdown"].write_text(markdown_table(result, method))
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    plot_confusion(result, paths["confusion"])
    return paths
