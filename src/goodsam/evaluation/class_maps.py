"""Class maps: how predicted trainIds and label-image values become the classes that are scored.

Built-in maps:

* ``cityscapes19``: the 19 Cityscapes trainIds; labels hold trainIds (255 = ignore).
* ``densepass13``: the 13-class DensePASS variant; labels hold 19 trainIds and both labels and predictions
  are merged (rider -> person; truck, bus, motorcycle, bicycle -> car; train ignored in labels).
* ``categories7``: the 7 Cityscapes categories; labels hold category ids (0 void = ignore, 1 flat …
  7 vehicle), predictions are mapped trainId -> category.

A JSON or YAML file describes any other map::

    names: [flat, construction, object, nature, sky, human, vehicle]  # the scored classes
    ids: [1, 2, 3, 4, 5, 6, 7]        # label value of each class (default 0..K-1)
    train_id_to_target: [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 6, 6, 7, 7, 7, 7, 7, 7]  # 19 ids or null
    ignore: [0]                       # label values to ignore besides 255 (default none)
    labels: target                    # label images hold target ids (default) or train_ids

``train_id_to_target`` gives, for each predicted trainId, the target id (a value from ``ids``) or
``null`` when that prediction has no target class (it then counts as a miss). With ``labels: train_ids``
the label images hold trainIds and are mapped through the same table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from goodsam import classes
from goodsam.errors import ConfigError, GoodSAMError

IGNORE = classes.IGNORE_INDEX
INVALID = -1


class LabelError(GoodSAMError):
    """A label image does not fit the dataset or the class map."""


@dataclass(frozen=True)
class ClassMap:
    """Scored classes plus lookup tables for predictions (trainIds) and label-image values.

    ``prediction_lut[train_id]``: class index 0..K-1, or 255 for a prediction with no target class.
    ``label_lut[value]``: class index 0..K-1, 255 to ignore, or -1 for a value that must not occur.
    """

    name: str
    names: tuple[str, ...]
    prediction_lut: np.ndarray
    label_lut: np.ndarray
    label_description: str

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def map_prediction(self, prediction: np.ndarray) -> np.ndarray:
        """Predicted trainIds (any integer map) -> class indices (255 = no target class)."""
        prediction = np.asarray(prediction)
        if prediction.size and (prediction.min() < 0 or prediction.max() > 255):
            raise ValueError("predicted class ids must lie in 0..255")
        return self.prediction_lut[prediction.astype(np.uint8)]

    def map_label(self, label: np.ndarray, source: str | Path = "label") -> np.ndarray:
        """Label values -> class indices (255 = ignore); unknown values raise :class:`LabelError`."""
        mapped = self.label_lut[label.astype(np.uint8)]
        if (mapped == INVALID).any():
            bad = np.unique(label[mapped == INVALID])
            shown = ", ".join(str(v) for v in bad[:8]) + (" …" if bad.size > 8 else "")
            raise LabelError(
                f"{source}: label values {shown} are out of range for class map '{self.name}' "
                f"(expected {self.label_description}); pick the right --class-map or label files")
        return mapped.astype(np.uint8)

    def as_dict(self) -> dict:
        """JSON-friendly description (for reports)."""
        return {"name": self.name, "classes": list(self.names)}


def _build(name: str, names: tuple[str, ...], ids: list[int], train_id_to_target: list[int | None],
           ignore: list[int], labels: str) -> ClassMap:
    if not names:
        raise ConfigError(f"class map '{name}': 'names' is empty")
    if len(ids) != len(names):
        raise ConfigError(f"class map '{name}': {len(ids)} ids for {len(names)} names")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"class map '{name}': ids must be distinct")
    for value in [*ids, *ignore]:
        if not isinstance(value, int) or not 0 <= value <= 255:
            raise ConfigError(f"class map '{name}': label value {value!r} is not an integer in 0..255")
    if set(ids) & set(ignore):
        raise ConfigError(f"class map '{name}': ids {sorted(set(ids) & set(ignore))} are also ignored")
    index_of = {value: i for i, value in enumerate(ids)}
    prediction_lut = np.full(256, IGNORE, dtype=np.uint8)
    for train_id, target in enumerate(train_id_to_target):
        if target is None or target == IGNORE:
            continue
        if target not in index_of:
            raise ConfigError(f"class map '{name}': train id {train_id} maps to {target!r}, which is not "
                              f"one of the ids {ids}")
        prediction_lut[train_id] = index_of[target]
    label_lut = np.full(256, INVALID, dtype=np.int16)
    label_lut[IGNORE] = IGNORE
    for value in ignore:
        label_lut[value] = IGNORE
    if labels == "target":
        for value, index in index_of.items():
            label_lut[value] = index
        described = _describe(ids, ignore)
    elif labels == "train_ids":
        label_lut[: len(train_id_to_target)] = prediction_lut[: len(train_id_to_target)]
        described = f"trainIds 0..{len(train_id_to_target) - 1} and 255 = ignore"
    else:
        raise ConfigError(f"class map '{name}': 'labels' must be 'target' or 'train_ids', got {labels!r}")
    return ClassMap(name, tuple(names), prediction_lut, label_lut, described)


def _describe(ids: list[int], ignore: list[int]) -> str:
    ordered = sorted(ids)
    span = (f"{ordered[0]}..{ordered[-1]}" if ordered == list(range(ordered[0], ordered[-1] + 1))
            else ", ".join(map(str, ordered)))
    ignored = ", ".join(str(v) for v in [*sorted(ignore), IGNORE])
    return f"{span}; ignored: {ignored}"


def cityscapes19() -> ClassMap:
    ids = list(range(classes.NUM_CLASSES))
    return _build("cityscapes19", classes.CITYSCAPES_CLASSES, ids, ids, [], "target")


def densepass13() -> ClassMap:
    table = [None if t == IGNORE else t for t in classes.TRAINID_TO_DENSEPASS13]
    return _build("densepass13", classes.DENSEPASS13_CLASSES, list(range(len(classes.DENSEPASS13_CLASSES))),
                  table, [], "train_ids")


def categories7() -> ClassMap:
    return _build("categories7", classes.CATEGORY_NAMES, list(range(1, 8)),
                  list(classes.TRAINID_TO_CATEGORY), [0], "target")


BUILTIN_CLASS_MAPS = {"cityscapes19": cityscapes19, "densepass13": densepass13, "categories7": categories7}


def load_class_map_file(path: Path) -> ClassMap:
    """Read a JSON or YAML class-map file (format in the module docstring)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read class map {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        kind = path.suffix.lstrip(".").upper()
        raise ConfigError(f"class map {path} is not valid {kind}: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"class map {path} must be a mapping with 'names' and 'train_id_to_target'")
    unknown = set(data) - {"names", "ids", "train_id_to_target", "ignore", "labels"}
    if unknown:
        raise ConfigError(f"class map {path}: unknown keys {sorted(unknown)}")
    names = data.get("names")
    table = data.get("train_id_to_target")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"class map {path}: 'names' must be a list of class names")
    if not isinstance(table, list) or len(table) != classes.NUM_CLASSES:
        raise ConfigError(f"class map {path}: 'train_id_to_target' must list {classes.NUM_CLASSES} target "
                          "ids (one per trainId; null for none)")
    ids = data.get("ids", list(range(len(names))))
    ignore = data.get("ignore", [])
    if not isinstance(ids, list) or not isinstance(ignore, list):
        raise ConfigError(f"class map {path}: 'ids' and 'ignore' must be lists of label values")
    return _build(path.stem, tuple(names), ids, table, ignore, data.get("labels", "target"))


def get_class_map(spec: str | Path | ClassMap) -> ClassMap:
    """A built-in map by name, a :class:`ClassMap`, or a JSON/YAML file."""
    if isinstance(spec, ClassMap):
        return spec
    if str(spec) in BUILTIN_CLASS_MAPS:
        return BUILTIN_CLASS_MAPS[str(spec)]()
    path = Path(spec)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"class map file {path} not found")
        return load_class_map_file(path)
    raise ConfigError(f"unknown class map '{spec}'; use one of {', '.join(BUILTIN_CLASS_MAPS)} "
                      "or a .json/.yaml file")
