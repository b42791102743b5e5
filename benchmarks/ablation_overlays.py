"""The overlays stage: predictions before/after training as small PNGs in ``<docs>/results/``.

* ``real_<stem>.png`` per real panorama: the TA (sliding windows) and the student before training,
  then the student and the TA after GoodSAM training (the eq. 4 + 5 + 7 run);
* ``cvrg_categories.png``: the labelled real panorama, its ground-truth categories and the same models
  mapped to the 7 categories;
* ``proxy_eval.png``: the first evaluation panorama of the proxy with its ground truth, the TA, the
  CTCF pseudo-label the student would be trained on, and the student before/after.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from ablation_common import Settings
from ablation_images import (
    CATEGORY_LEGEND,
    categories_as_train_ids,
    panel,
    predict,
    save_small_png,
    train_ids_as_categories,
)

from goodsam.imageio import list_images, load_label, load_rgb
from goodsam.inference import load_model

MODELS = (("ta", "TA {ta}, sliding windows, before training", True),
          ("student_before", "student {student}, before training", False),
          ("student_after", "student after GoodSAM training (eq. 4+5+7)", False),
          ("ta_after", "TA after GoodSAM training, sliding windows", True))


def load_models(settings: Settings) -> dict[str, tuple[str, object, bool]]:
    """name -> (row title, model, sliding?) for the four models shown."""
    run = settings.work / "runs" / "full"
    refs = {"ta": settings.ta, "student_before": settings.student, "student_after": str(run / "student"),
            "ta_after": str(run / "ta")}
    out = {}
    for name, title, sliding in MODELS:
        out[name] = (title.format(ta=settings.ta, student=settings.student), load_model(refs[name]), sliding)
    return out


def predictions(models: dict, image: np.ndarray, settings: Settings) -> dict[str, np.ndarray]:
    """trainIds of every model on one panorama."""
    out = {}
    for name, (_, model, sliding) in models.items():
        window = settings.window if sliding else None
        out[name] = predict(model, image, window, settings.stride if sliding else None)
    return out


def real_panels(models: dict, settings: Settings, out_dir: Path) -> list[dict]:
    files = []
    for path in sorted((settings.work / "real").glob("*.png")):
        image = load_rgb(path)
        preds = predictions(models, image, settings)
        rows = [(models[name][0], preds[name]) for name in models]
        files.append(save_small_png(panel(image, rows), out_dir / f"real_{path.stem}.png"))
    return files


def labelled_panel(models: dict, settings: Settings, out_dir: Path) -> dict:
    folder = settings.work / "labelled"
    path = list_images(folder / "images")[0]
    image = load_rgb(path)
    truth = load_label(folder / "labels" / f"{path.stem}_categoryIds.png")
    preds = predictions(models, image, settings)
    rows = [("ground truth (categories; void uncoloured)", categories_as_train_ids(truth))]
    rows += [(models[name][0], train_ids_as_categories(preds[name])) for name in models]
    return save_small_png(panel(image, rows, CATEGORY_LEGEND), out_dir / "cvrg_categories.png")


def proxy_panel(models: dict, settings: Settings, out_dir: Path) -> dict:
    folder = settings.work / "proxy" / "eval"
    path = list_images(folder / "images")[0]
    image = load_rgb(path)
    truth = load_label(folder / "labels" / f"{path.stem}_trainIds.png")
    ctcf = load_label(settings.work / "fusion" / "pretrained" / "CTCF" / f"{path.stem}.png")
    preds = predictions({k: models[k] for k in ("ta", "student_before", "student_after")}, image, settings)
    rows = [("ground truth (uncovered = ignored)", truth), (models["ta"][0], preds["ta"]),
            ("CTCF pseudo-label (pretrained TA + MobileSAM; 255 = no mask)", ctcf),
            (models["student_before"][0], preds["student_before"]),
            (models["student_after"][0], preds["student_after"])]
    return save_small_png(panel(image, rows), out_dir / "proxy_eval.png")


def run_overlays(settings: Settings) -> dict:
    """Write every overlay; returns the files with their sizes."""
    torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    out_dir = settings.docs / "results"
    models = load_models(settings)
    files = real_panels(models, settings, out_dir)
    files.append(labelled_panel(models, settings, out_dir))
    files.append(proxy_panel(models, settings, out_dir))
    return {"files": files, "seconds": time.perf_counter() - start}
