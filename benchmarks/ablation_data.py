"""Data of the ablations: the pinhole-to-ERP proxy panoramas, the labelled real panorama, real panoramas.

* **Proxy.** The first ``train_frames`` aachen frames (Cityscapes train) become the training panoramas,
  the frankfurt frames (Cityscapes val) the evaluation panoramas, both with ``goodsam data
  pinhole-to-erp``: ``frames_per_pano`` frames around the horizon (pitch 0) at evenly spaced yaws (a
  seeded common offset + a small jitter). Frames are never shared between the two sets.
* **Labelled panorama.** ``labelled_panorama/cvrg_pano_0000.png`` (a full 2:1 ERP) and its category ids
  are cut to the same ERP band as every other panorama (the rows of latitudes within the band's span,
  centred on the horizon, as :func:`goodsam.train.data.fit_erp_band` does), then resized: the image
  bilinearly, the labels with nearest neighbour.
* **Real panoramas** (unlabelled) are fitted to the band with :func:`fit_erp_band`, for the overlays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ablation_common import Settings, read_json, run_goodsam

from goodsam.assets import find_asset
from goodsam.imageio import list_images, load_label, load_rgb, resize_label, resize_rgb, save_png
from goodsam.train.data import fit_erp_band

LABELLED_STEM = "cvrg_pano_0000"


def link_frames(frames: list[Path], labels: Path, out: Path) -> Path:
    """``out/images`` + ``out/labels``: symlinks to the frames and their ``_trainIds.png`` labels."""
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for frame in frames:
        pairs = ((out / "images" / frame.name, frame),
                 (out / "labels" / f"{frame.stem}_trainIds.png", labels / f"{frame.stem}_trainIds.png"))
        for link, target in pairs:
            if not link.is_symlink():
                link.symlink_to(target.resolve())
    return out


def split_frames(root: Path, settings: Settings) -> dict[str, list[Path]]:
    """The training (aachen) and evaluation (frankfurt) frames, sorted by name."""
    images = sorted((root / "images").glob("*.jpg"))
    aachen = [p for p in images if p.name.startswith("aachen_")]
    frankfurt = [p for p in images if p.name.startswith("frankfurt_")]
    return {"train": aachen[: settings.train_frames], "eval": frankfurt[: settings.eval_frames]}


def convert_args(src: Path, out: Path, split: str, per_pano: int, settings: Settings) -> list[str]:
    """``goodsam data pinhole-to-erp`` arguments of one split."""
    return ["data", "pinhole-to-erp", str(src), str(out), "--frames-per-pano", str(per_pano),
            "--yaw-jitter", str(settings.yaw_jitter), "--split", split, "--seed", str(settings.seed),
            "--erp-width", str(settings.width), "--erp-height", str(settings.height)]


def band_rows(rows: int, cols: int, height: int, width: int) -> tuple[int, int]:
    """(first row, number of rows) of a 2:1 ERP image inside a ``height x width`` band (all rows else)."""
    if cols != 2 * rows:
        return 0, rows
    band = max(1, round(rows * (360.0 * height / width) / 180.0))
    if band >= rows:
        return 0, rows
    return (rows - band) // 2, band


def labelled_band(image: np.ndarray, label: np.ndarray, height: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A full ERP image and its label map cut to the band and resized (bilinear / nearest)."""
    top, count = band_rows(image.shape[0], image.shape[1], height, width)
    image = np.ascontiguousarray(image[top:top + count])
    label = np.ascontiguousarray(label[top:top + count])
    return resize_rgb(image, height, width), resize_label(label, height, width)


def prepare_labelled(out: Path, settings: Settings) -> Path:
    """``out/images/<stem>.png`` and ``out/labels/<stem>_categoryIds.png`` of the labelled panorama."""
    root = find_asset("labelled_panorama")
    image = load_rgb(root / f"{LABELLED_STEM}.png")
    label = load_label(root / f"{LABELLED_STEM}_categoryIds.png")
    image, label = labelled_band(image, label, settings.height, settings.width)
    save_png(out / "images" / f"{LABELLED_STEM}.png", image)
    save_png(out / "labels" / f"{LABELLED_STEM}_categoryIds.png", label)
    return out


def prepare_real(out: Path, settings: Settings) -> list[Path]:
    """The first ``real_panoramas`` real panoramas fitted to the band, as ``out/<stem>.png``."""
    paths = list_images(find_asset("panoramas"))[: settings.real_panoramas]
    written = []
    for path in paths:
        target = out / f"{path.stem}.png"
        if not target.is_file():
            save_png(target, fit_erp_band(load_rgb(path), settings.height, settings.width))
        written.append(target)
    return written


def coverage(manifest: Path) -> dict:
    """Panorama count and mean labelled coverage from a pinhole-to-erp manifest."""
    data = read_json(manifest) or {}
    panos = data.get("panoramas", {})
    values = [float(p.get("coverage", 0.0)) for p in panos.values()]
    return {"panoramas": len(panos), "mean_coverage": float(np.mean(values)) if values else 0.0,
            "frames": sum(len(p.get("frames", [])) for p in panos.values())}


def run_data(settings: Settings, log: Path) -> dict:
    """The data stage; returns its summary (commands, counts, coverage)."""
    work = settings.work
    root = find_asset("cityscapes")
    frames = split_frames(root, settings)
    summary: dict = {"commands": [], "splits": {}}
    per_pano = {"train": settings.frames_per_pano, "eval": settings.eval_frames_per_pano}
    for split, paths in frames.items():
        src = link_frames(paths, root / "labels", work / "frames" / split)
        out = work / "proxy" / split
        args = convert_args(src, out, split, per_pano[split], settings)
        run_goodsam(args, settings.threads, log)
        summary["commands"].append(args)
        summary["splits"][split] = {**coverage(out / "manifest.json"), "frames_per_pano": per_pano[split]}
    prepare_labelled(work / "labelled", settings)
    summary["real"] = [p.name for p in prepare_real(work / "real", settings)]
    return summary
