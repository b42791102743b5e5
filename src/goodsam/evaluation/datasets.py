"""Labelled image sets on disk: find every image and its label file, with clear errors.

Layouts (``layout=`` / ``--layout``):

* ``densepass``: ``ROOT/leftImg8bit/<split>/<sub>/<id>_.png`` with
  ``ROOT/gtFine/<split>/<sub>/<id>_labelTrainIds.png`` (DensePASS ships ``<sub> = cs``, split ``val``).
* ``wildpass``: ``ROOT/leftImg8bit/<split>/<sub>/<name>.{png,jpg}`` with the label under the mirrored
  folder ``ROOT/gtFine/<split>/<sub>/`` named ``<stem>_labelTrainIds.png`` or ``<stem>.png`` (the official
  WildPASS evaluation reads ``<image path>.replace('/leftImg8bit/', '/gtFine/')``). The official WildPASS
  labels use Mapillary ids on 8 classes: convert them to trainIds, or pass a class-map file (``ids`` =
  their label values) with ``--class-map``.
* ``cityscapes``: ``ROOT/leftImg8bit/<split>/<city>/<base>_leftImg8bit.png`` with
  ``ROOT/gtFine/<split>/<city>/<base>_gtFine_labelTrainIds.png`` or, failing that,
  ``<base>_gtFine_labelIds.png`` (converted to trainIds with the official table).
* ``folder``: an image folder (or one image) and a label folder; the label of ``<stem>.<ext>`` is named by
  a pattern, e.g. ``{stem}_trainIds.png`` (the shared Cityscapes sample) or ``{stem}_categoryIds.png``.
  Images and labels may share a folder: files matching the label pattern are then not taken as images.

``auto`` picks ``cityscapes``/``densepass``/``wildpass`` from the files under ``ROOT``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goodsam import classes
from goodsam.errors import ConfigError, ImageError
from goodsam.evaluation.class_maps import LabelError
from goodsam.imageio import IMAGE_SUFFIXES, list_images, load_label, load_rgb

LAYOUTS = ("auto", "densepass", "wildpass", "cityscapes", "folder")


@dataclass(frozen=True)
class LabelledSample:
    """One image and its label file; ``label_ids`` marks Cityscapes labelIds to convert to trainIds."""

    name: str
    image: Path
    label: Path
    label_ids: bool = False


@dataclass(frozen=True)
class LabelledSet:
    """The samples of a labelled set, in a stable (sorted) order."""

    layout: str
    source: str
    samples: tuple[LabelledSample, ...]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, sample: LabelledSample) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 RGB image, HxW uint8 label) with sizes checked; labelIds converted."""
        image = load_rgb(sample.image)
        label = load_label(sample.label)
        if label.shape != image.shape[:2]:
            raise LabelError(f"label {sample.label} is {label.shape[1]}x{label.shape[0]} but image "
                             f"{sample.image} is {image.shape[1]}x{image.shape[0]} (width x height)")
        if sample.label_ids:
            label = classes.LABELID_TO_TRAINID_LUT[label]
        return image, label

    def describe(self) -> dict:
        return {"layout": self.layout, "source": self.source, "n_images": len(self.samples)}


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split_dirs(root: Path, split: str) -> tuple[Path, Path]:
    images, labels = root / "leftImg8bit" / split, root / "gtFine" / split
    if not images.is_dir():
        raise ConfigError(f"{root} has no leftImg8bit/{split} folder; check --dataset and --split")
    if not labels.is_dir():
        raise ConfigError(f"{root} has no gtFine/{split} folder for the labels of leftImg8bit/{split}")
    return images, labels


def _missing(image: Path, expected: list[Path]) -> LabelError:
    tried = " or ".join(str(p) for p in expected)
    return LabelError(f"no label for image {image} (expected {tried})")


def _paired(root: Path, split: str, candidates: Callable[[Path, Path], list[Path]]) -> list[LabelledSample]:
    """Every image under ``leftImg8bit/<split>`` with the first existing of ``candidates(image, folder)``
    (label paths in the mirrored ``gtFine/<split>`` folder)."""
    image_dir, label_dir = _split_dirs(root, split)
    samples = []
    for image in _images_under(image_dir):
        options = candidates(image, label_dir / image.parent.relative_to(image_dir))
        label = next((c for c in options if c.is_file()), None)
        if label is None:
            raise _missing(image, options)
        samples.append(LabelledSample(str(image.relative_to(image_dir)), image, label))
    return samples


def _densepass(root: Path, split: str) -> list[LabelledSample]:
    def candidates(image: Path, folder: Path) -> list[Path]:
        stem = image.stem[:-1] if image.stem.endswith("_") else image.stem
        return [folder / f"{stem}_labelTrainIds.png"]

    return _paired(root, split, candidates)


def _wildpass(root: Path, split: str) -> list[LabelledSample]:
    return _paired(root, split, lambda image, folder: [folder / f"{image.stem}_labelTrainIds.png",
                                                        folder / f"{image.stem}.png"])


CITYSCAPES_SUFFIX = "_leftImg8bit"


def cityscapes_sample(image: Path, label_folder: Path) -> tuple[LabelledSample | None, list[Path]]:
    """A Cityscapes ``<base>_leftImg8bit`` image with its ``gtFine`` label in ``label_folder``
    (``labelTrainIds``, else ``labelIds`` to be mapped), named ``<base>``; None if neither exists.
    Also returns the label paths looked for."""
    base = image.stem[: -len(CITYSCAPES_SUFFIX)]
    train_ids = label_folder / f"{base}_gtFine_labelTrainIds.png"
    label_ids = label_folder / f"{base}_gtFine_labelIds.png"
    expected = [train_ids, label_ids]
    if train_ids.is_file():
        return LabelledSample(base, image, train_ids), expected
    if label_ids.is_file():
        return LabelledSample(base, image, label_ids, label_ids=True), expected
    return None, expected


def _cityscapes(root: Path, split: str) -> list[LabelledSample]:
    image_dir, label_dir = _split_dirs(root, split)
    samples = []
    for image in _images_under(image_dir):
        if not image.stem.endswith(CITYSCAPES_SUFFIX):
            continue
        sample, expected = cityscapes_sample(image, label_dir / image.parent.relative_to(image_dir))
        if sample is None:
            raise _missing(image, expected)
        samples.append(sample)
    return samples


def _pattern_glob(pattern: str) -> str:
    return pattern.replace("{stem}", "*").replace("{name}", "*")


def _folder(images: Path, labels: Path, pattern: str) -> list[LabelledSample]:
    if "{stem}" not in pattern and "{name}" not in pattern:
        raise ConfigError(f"--label-pattern '{pattern}' must contain {{stem}} (the image name without "
                          "extension), e.g. '{stem}_trainIds.png'")
    if not labels.is_dir():
        raise ConfigError(f"label folder {labels} not found")
    image_paths = list_images(images)
    if images.is_dir() and images.resolve() == labels.resolve():  # shared folder: labels are not images
        for image in image_paths:
            if pattern.format(stem=image.stem, name=image.name) == image.name:
                raise ConfigError(f"--label-pattern '{pattern}' names the image {image} itself as its label")
        label_glob = _pattern_glob(pattern)
        image_paths = [p for p in image_paths if not fnmatch.fnmatch(p.name, label_glob)]
    if not image_paths:
        raise ImageError(f"no images found in {images} (every file there matches the label pattern)")
    samples = []
    for image in image_paths:
        label = labels / pattern.format(stem=image.stem, name=image.name)
        if label.resolve() == image.resolve():
            raise ConfigError(f"--label-pattern '{pattern}' names the image {image} itself as its label")
        if not label.is_file():
            raise _missing(image, [label])
        samples.append(LabelledSample(image.stem, image, label))
    return samples


def detect_layout(root: Path, split: str) -> str:
    """Guess the layout of a dataset root from its files."""
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise ConfigError(f"cannot tell the layout of {root}: no leftImg8bit/{split} folder (give --images "
                          "and --labels for a plain folder pair, or --layout)")
    images = _images_under(image_dir)
    if not images:
        raise ImageError(f"no images found under {image_dir}")
    if any(p.stem.endswith("_leftImg8bit") for p in images):
        return "cityscapes"
    if any((root / "gtFine" / split).rglob("*_labelTrainIds.png")) and images[0].stem.endswith("_"):
        return "densepass"
    return "wildpass"


def open_labelled_set(root: str | Path | None = None, layout: str = "auto", split: str = "val",
                      images: str | Path | None = None, labels: str | Path | None = None,
                      label_pattern: str = "{stem}.png", include: str | None = None,
                      limit: int | None = None) -> LabelledSet:
    """Find the samples of a labelled set; ``include`` keeps image names matching a glob."""
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout '{layout}'; use one of {', '.join(LAYOUTS)}")
    if images is not None or layout == "folder":
        if images is None or labels is None:
            raise ConfigError("the folder layout needs both --images and --labels")
        if root is not None:
            raise ConfigError("give either --dataset ROOT or --images/--labels, not both")
        images, labels = Path(images), Path(labels)
        samples, layout, source = _folder(images, labels, label_pattern), "folder", f"{images} + {labels}"
    else:
        if root is None:
            raise ConfigError("no dataset: give --dataset ROOT (DensePASS/WildPASS/Cityscapes) or "
                              "--images DIR --labels DIR")
        root = Path(root)
        if not root.is_dir():
            raise ConfigError(f"dataset folder {root} not found")
        layout = detect_layout(root, split) if layout == "auto" else layout
        finder = {"densepass": _densepass, "wildpass": _wildpass, "cityscapes": _cityscapes}[layout]
        samples, source = finder(root, split), f"{root} ({split})"
    if include:
        samples = [s for s in samples if fnmatch.fnmatch(s.image.name, include)]
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise ImageError(f"no labelled images found in {source}"
                         + (f" matching '{include}'" if include else ""))
    return LabelledSet(layout, source, tuple(samples))


# ------------------------------------------------ labelled pinhole frames (for `goodsam data pinhole-to-erp`)
def _missing_labels_error(missing: list[tuple[str, Path]]) -> ImageError:
    stem, expected = missing[0]
    return ImageError(f"{len(missing)} image(s) have no label, e.g. {stem} (expected {expected})")


def find_plain_frames(src: Path) -> list[LabelledSample]:
    """``src/images/<stem>.<ext>`` with ``src/labels/<stem>_trainIds.png``."""
    image_dir, label_dir = src / "images", src / "labels"
    if not image_dir.is_dir():
        raise ImageError(
            f"{src}: no images/ folder (plain layout: images/<stem>.jpg + labels/<stem>_trainIds.png)"
        )
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {image_dir}")
    frames, missing = [], []
    for path in images:
        label = label_dir / f"{path.stem}_trainIds.png"
        if label.is_file():
            frames.append(LabelledSample(path.stem, path, label))
        else:
            missing.append((path.stem, label))
    if missing:
        raise _missing_labels_error(missing)
    return sorted(frames, key=lambda f: f.name)


def find_cityscapes_frames(src: Path, split: str) -> list[LabelledSample]:
    """``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with ``gtFine/...labelTrainIds.png``
    (or ``labelIds.png``, mapped to trainIds)."""
    image_root = src / "leftImg8bit" / split
    if not image_root.is_dir():
        raise ImageError(
            f"{src}: no leftImg8bit/{split}/ folder (cityscapes layout; choose the split with --split)"
        )
    suffix = CITYSCAPES_SUFFIX
    frames, missing = [], []
    for path in sorted(image_root.glob(f"*/*{suffix}.png")):
        sample, expected = cityscapes_sample(path, src / "gtFine" / split / path.parent.name)
        if sample is not None:
            frames.append(sample)
        else:
            missing.append((path.stem[: -len(suffix)], expected[0]))
    if not frames and not missing:
        raise ImageError(f"no *{suffix}.png images found under {image_root}/<city>/")
    if missing:
        raise _missing_labels_error(missing)
    return sorted(frames, key=lambda f: f.name)


def find_frames(src: Path, layout: str, split: str | None) -> tuple[str, list[LabelledSample]]:
    """Resolve ``layout`` (auto: cityscapes if ``leftImg8bit/`` exists) and list the frames by stem."""
    if not src.is_dir():
        raise ImageError(f"no such folder: {src}")
    if layout == "auto":
        layout = "cityscapes" if (src / "leftImg8bit").is_dir() else "plain"
    if layout == "plain":
        return layout, find_plain_frames(src)
    if layout == "cityscapes":
        return layout, find_cityscapes_frames(src, split or "train")
    raise ConfigError(f"unknown layout '{layout}' (use plain, cityscapes or auto)")
