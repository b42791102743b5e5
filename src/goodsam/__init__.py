"""goodsam: label-free panoramic semantic segmentation by distilling SAM and a teacher assistant.

Data flow (one sub-package per stage):
panorama (``panorama``) -> windows -> SAM masks (``sam``) + TA logits (``segmenters``)
-> DAR (``dar``: eq. 1-3) -> MKA (``mka``: eq. 4-9) -> trained student (``train``).

The Python API: each function below is the one the command line calls (``goodsam <verb>`` only parses
options and prints). Names are imported on first use, so ``import goodsam`` stays light::

    import goodsam

    goodsam.compute_masks("panoramas/", "masks/", points_per_side=16)          # goodsam masks
    result = goodsam.run_training("nano-s0.5", "panoramas/", "masks/", "runs/a")  # goodsam train
    model = goodsam.load_model(result.student_dir)
    goodsam.predict_images(model, ["panoramas/"], "predictions/")               # goodsam predict
    scores = goodsam.evaluate(model, goodsam.open_labelled_set("DensePASS/"),
                              goodsam.get_class_map("cityscapes19"))            # goodsam eval
    goodsam.export_checked(model, "student.onnx", image=None)                   # goodsam export
    goodsam.pinhole_folder_to_erp("cityscapes/", "proxy/")                      # goodsam data pinhole-to-erp
    fused = goodsam.fuse("ctcf", window_masks, window_logits)                   # eq. 3 on one window
    goodsam.run_demo("outputs/demo")                                            # goodsam demo
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (the CLI verb that uses it in the comment)
_API = {
    "load_rgb": "goodsam.imageio",
    "resize_rgb": "goodsam.imageio",
    "compute_masks": "goodsam.sam.folder",            # masks
    "cache_path": "goodsam.sam.cache",
    "load_panorama_masks": "goodsam.sam.cache",
    "build_mask_generator": "goodsam.sam.registry",
    "AMGSettings": "goodsam.sam.base",
    "load_config": "goodsam.train.config",            # train
    "mask_options": "goodsam.train.pipeline",
    "run_training": "goodsam.train.pipeline",
    "load_model": "goodsam.inference",                # predict / eval / export
    "predict_labels": "goodsam.inference",
    "predict_logits": "goodsam.inference",
    "predict_images": "goodsam.predict",              # predict
    "evaluate": "goodsam.evaluation.evaluate",        # eval
    "open_labelled_set": "goodsam.evaluation.datasets",
    "get_class_map": "goodsam.evaluation.class_maps",
    "write_report": "goodsam.evaluation.report",
    "export_checked": "goodsam.export",               # export
    "export_onnx": "goodsam.export",
    "pinhole_folder_to_erp": "goodsam.evaluation.proxy",  # data pinhole-to-erp
    "build_segmenter": "goodsam.segmenters.registry",
    "sliding_windows": "goodsam.panorama.windows",
    "fuse": "goodsam.dar.fusion",                     # eq. 3 (and the SSA / SEPL baselines)
    "run_demo": "goodsam.demo",                       # demo (the README's main job)
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import an API name from its module on first use."""
    if name not in _API:
        raise AttributeError(f"module 'goodsam' has no attribute '{name}'")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
