"""Training configuration: YAML files (``train/configs/*.yaml``) -> a typed, validated :class:`TrainConfig`.

A config names a bundled setup (``nano-s0.5``, ``goodsam-t`` …) or a YAML path. A YAML file may start
from another with ``base: NAME_OR_PATH`` (deep-merged, the file's own keys win). ``--set a.b=value``
overrides are applied last; values are parsed as YAML (``--set optim.student.lr=1e-4``,
``--set loss.eq7_student_boundary=0``, ``--set ta.weights=null``). Unknown keys are errors.

The sections are pydantic models whose scalar types (:data:`Int`, :data:`Float` …) check values the way
the YAML files need (``1e-4`` is a number, ``true`` is not an integer) and report one line naming the
key, the value and what is expected (:class:`ConfigError`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from goodsam.classes import NUM_CLASSES
from goodsam.dar.fusion import FUSIONS, IGNORE_INDEX, ctcf_fusion, sepl_fusion
from goodsam.errors import ConfigError
from goodsam.mka.losses import LossWeights
from goodsam.sam.base import AMGSettings
from goodsam.segmenters.scale import parse_scale, resolve_scale

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Keys that do not change what is computed: they may differ when a run is resumed.
NON_SEMANTIC_KEYS = ("name", "description", "train.steps", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.progress", "train.target_cache", "train.ta_checkpointing")
# Keys added after runs were made: at these values they compute what the older configs did, so they
# stay out of the hash and those runs still resume.
ADDED_KEY_DEFAULTS = {"ta.scale": 1.0, "student.scale": 1.0, "fusion.ta_confidence": None,
                      "fusion.uncertain": "paper", "fusion.ta_classes": None,
                      "loss.boundary_form": "paper", "train.ta_ema": None, "loss.eq4_target": "hard",
                      "data.resample_max": 1.0}


# ------------------------------------------------------------------------------------------ scalars
def _expected(what: str) -> PydanticCustomError:
    """The error of a value that is not ``what`` (e.g. ``must be an integer``)."""
    return PydanticCustomError("config_value", "{expected}", {"expected": what})


def _integer(value: Any) -> int:
    """An int (booleans and strings are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("must be an integer")
    return value


def _given_number(value: Any) -> int | float:
    """A number, an int kept as given (YAML 1.1 reads ``1e-3``, without a dot, as a string)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("must be a number")
    return value


def _number(value: Any) -> float:
    """A number as a float."""
    return float(_given_number(value))


def _boolean(value: Any) -> bool:
    """``true`` or ``false`` (not 0/1)."""
    if not isinstance(value, bool):
        raise _expected("must be true or false")
    return value


def _rgb(value: Any) -> tuple[int, int, int]:
    """Three integers in 0..255."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        raise _expected("must be an RGB triple like [0, 0, 0]")
    return tuple(value)


def _class_ids(value: Any) -> tuple[int, ...]:
    """Distinct trainIds (0..NUM_CLASSES-1), e.g. ``[5, 6, 7]``."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < NUM_CLASSES for v in value) \
            or len(set(value)) != len(value):
        raise _expected(f"must be a list of distinct trainIds in 0..{NUM_CLASSES - 1}, like [5, 6, 7]")
    return tuple(value)


def _pair(value: Any) -> tuple[float, float]:
    """Two numbers (Adam's betas)."""
    try:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return tuple(_number(v) for v in value)
    except PydanticCustomError:
        pass
    raise _expected("must be a pair of numbers")


def _scale(value: Any) -> float | str:
    """A positive number or ``auto`` (:func:`goodsam.segmenters.scale.parse_scale`)."""
    try:
        return parse_scale(value)
    except ConfigError as exc:
        raise PydanticCustomError("config_message", "{message}", {"message": str(exc)}) from None


def _checked(check: Callable[[Any], Any], optional: bool = False) -> PlainValidator:
    """A pydantic validator running ``check``; null is accepted only when ``optional``."""
    def validate(value: Any) -> Any:
        if value is None:
            if optional:
                return None
            raise PydanticCustomError("config_null", "must not be null")
        return check(value)

    return PlainValidator(validate)


Int = Annotated[int, _checked(_integer)]
OptInt = Annotated[int | None, _checked(_integer, optional=True)]
Float = Annotated[float, _checked(_number)]
OptFloat = Annotated[float | None, _checked(_number, optional=True)]
# A number kept as written (an int stays an int): the values of the sections that were untyped
# mappings (sam.settings, fusion.options) entered the config hash unconverted.
Number = Annotated[int | float, _checked(_given_number)]
Bool = Annotated[bool, _checked(_boolean)]
Str = Annotated[str, _checked(str)]  # any scalar, as text
OptStr = Annotated[str | None, _checked(str, optional=True)]
RGB = Annotated[tuple[int, int, int] | None, _checked(_rgb, optional=True)]
Pair = Annotated[tuple[float, float], _checked(_pair)]
ClassIds = Annotated[tuple[int, ...] | None, _checked(_class_ids, optional=True)]
Scale = Annotated[float | str, _checked(_scale)]


# ----------------------------------------------------------------------------------------- sections
class Section(BaseModel):
    """A config section: a mapping of known keys (null: all defaults), each checked by its type."""

    model_config = ConfigDict(extra="forbid")
    null_is_empty: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """Refuse a non-mapping and unknown keys (all of the section's, with the known ones)."""
        if isinstance(data, cls):
            return data
        if data is None and cls.null_is_empty:
            return {}
        if data is None:
            raise PydanticCustomError("config_null", "must not be null")
        if not isinstance(data, dict):
            raise (PydanticCustomError("config_section", "must be a mapping") if cls.null_is_empty
                   else _expected("must be a mapping"))
        unknown = sorted(str(key) for key in set(data) - set(cls.model_fields))
        if unknown:
            raise PydanticCustomError("config_unknown", "unknown keys",
                                      {"unknown": unknown, "known": sorted(cls.model_fields)})
        return data


class GivenKeys(Section, Mapping):
    """A section read as the mapping of the keys the config gives (as the untyped dicts were);
    attributes of keys it does not give hold their defaults."""

    null_is_empty: ClassVar[bool] = False

    def __getitem__(self, key: str) -> Any:
        if key not in self.model_fields_set:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # keys, as a mapping's
        return (name for name in type(self).model_fields if name in self.model_fields_set)

    def __len__(self) -> int:
        return len(self.model_fields_set)

    @model_serializer
    def _given(self) -> dict[str, Any]:
        return dict(self.items())


def mirror_fields(source: type, types: dict[type, Any]) -> dict[str, Any]:
    """The fields of dataclass ``source`` as pydantic field definitions ``name=(type, default)``, each
    type mapped through ``types`` (e.g. ``float`` -> :data:`Number`): a section that checks exactly the
    dataclass's fields, written once (in the dataclass)."""
    hints = typing.get_type_hints(source)
    return {f.name: (types[hints[f.name]], f.default) for f in dataclasses.fields(source)}


SAMSettings = create_model(
    "SAMSettings", __base__=GivenKeys, __module__=__name__,
    __doc__="``sam.settings``: the fields of :class:`goodsam.sam.base.AMGSettings` (defaults from it).",
    **mirror_fields(AMGSettings, {int: Int, float: Number}))


def keyword_defaults(function: Callable) -> dict[str, Any]:
    """Keyword-only parameters of ``function`` and their defaults (a fusion's options)."""
    return {p.name: p.default for p in inspect.signature(function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


_CTCF, _SEPL = keyword_defaults(ctcf_fusion), keyword_defaults(sepl_fusion)


class FusionOptions(GivenKeys):
    """``fusion.options``: keyword options of the fusion functions (:mod:`goodsam.dar.fusion`); the
    ones given are passed on (``fuse(method, ..., **options)``)."""

    small_area: Int = _CTCF["small_area"]
    large_area: Int = _CTCF["large_area"]
    theta_small: Number = _CTCF["theta_small"]
    theta_medium: Number = _CTCF["theta_medium"]
    theta_large: Number = _CTCF["theta_large"]
    top_k: Int = _CTCF["top_k"]
    min_coverage: Number = _SEPL["min_coverage"]
    ignore_index: Int = IGNORE_INDEX


LossSection = create_model(
    "LossSection", __base__=Section, __module__=__name__,
    __doc__="``loss``: the fields of :class:`goodsam.mka.losses.LossWeights` (what ``config.loss`` holds).",
    **mirror_fields(LossWeights, {float: Float, str: Str}))


class ValidatedAs:
    """Annotation of a dataclass field read through a :class:`Section` (its keys and types): the
    section's values build the dataclass; an instance of it is taken as it is."""

    def __init__(self, section: type[Section]):
        self.section = section

    def __get_pydantic_core_schema__(self, source: type, handler: GetCoreSchemaHandler) -> CoreSchema:
        def build(value: Any, validate: Callable[[Any], Section]) -> Any:
            return value if isinstance(value, source) else source(**validate(value).model_dump())

        return core_schema.no_info_wrap_validator_function(
            build, handler.generate_schema(self.section),
            serialization=core_schema.plain_serializer_function_ser_schema(asdict))


class DataConfig(Section):
    """Panoramas are resized to a fixed ERP band ``height x width``; ``batch_size`` is global (all ranks)."""

    height: Int = 400
    width: Int = 2048
    batch_size: Int = 1
    roll: Bool = True
    flip: Bool = True
    # Pixels of exactly this RGB colour are not part of the scene (e.g. the black fill around frames
    # projected by `goodsam data pinhole-to-erp`): no loss term uses them. null: every pixel counts.
    void_rgb: RGB = None
    # The student's input (only) is given the detail of the panorama stored up to this many times smaller
    # and upscaled, a factor drawn per panorama and step in [1, resample_max]; the TA's targets come from
    # the panorama itself (a panorama is often less sharp than the frames a proxy is made of). 1: off.
    resample_max: Number = 1.0


class WindowConfig(Section):
    """Sliding windows (full panorama height) of ``width`` columns every ``stride`` columns."""

    width: Int = 512
    stride: Int = 256
    wrap: Bool = False


class ModelConfig(Section):
    """A segmenter from the zoo (``goodsam.segmenters.build_segmenter``)."""

    architecture: Str = "espnetv2-s0.5"
    weights: OptStr = None
    pretrained: Bool = True


class TAConfig(ModelConfig):
    """The TA and its input ``scale`` (a number or ``auto``; see :mod:`goodsam.segmenters.scale`): every
    window is resized by it before the TA wherever the TA runs (targets of eq. 1-4 and 6)."""

    scale: Scale = 1.0


class StudentConfig(ModelConfig):
    """The student and its input ``scale``: the whole panorama is resized by it before the student and
    the logits resized back (eq. 4, 5, 7 and validation); evaluate the exported student with the same
    ``--scale`` (it is recorded in the export as ``input_scale``)."""

    scale: Scale = 1.0


class SAMConfig(Section):
    """The frozen SAM used (only) to fill the mask cache; ``settings``: :class:`SAMSettings`."""

    model: Str = "mobile_sam"
    weights: OptStr = None
    impl: Str = "fast"
    settings: SAMSettings = Field(default_factory=SAMSettings)

    def amg_settings(self) -> AMGSettings:
        """``settings`` as :class:`goodsam.sam.base.AMGSettings` (AMG's defaults for keys not given)."""
        return AMGSettings(**self.settings)


class FusionConfig(Section):
    """Eq. 3 fusion (``ctcf``, ``ssa`` or ``sepl``) + options; ``alpha``: B_ref's top-2 gap threshold.

    Safeguards beyond the paper (null/``paper`` = the paper's rule), see :mod:`goodsam.dar.safeguards`:
    ``ta_confidence``: inside a mask, pixels whose TA top probability reaches it keep the TA's label;
    ``uncertain``: ``paper`` (CTCF's weight-0 masks take the lowest-entropy label) or ``ta`` (they take
    the TA's own per-pixel labels: the mask decides nothing it is not confident about);
    ``ta_classes``: trainIds the TA keeps wherever it predicts them (e.g. ``[5, 6, 7]``, Cityscapes'
    object category: pole, traffic light, sign, thin objects a SAM mask rarely isolates).
    """

    method: Str = "ctcf"
    options: FusionOptions = Field(default_factory=FusionOptions)
    alpha: Float = 0.3
    ta_confidence: OptFloat = None
    uncertain: Str = "paper"
    ta_classes: ClassIds = None


class OptimizerConfig(Section):
    """AdamW of one model."""

    lr: Float = 6e-5
    weight_decay: Float = 0.01
    betas: Pair = (0.9, 0.999)


class OptimConfig(Section):
    """Two AdamW optimisers and their shared schedule: linear warm-up, then polynomial decay.

    ``decay_steps``: the schedule's horizon (``null`` = ``train.steps``); fix it to extend runs without
    changing the learning rate of steps already planned.
    """

    student: OptimizerConfig = Field(default_factory=OptimizerConfig)
    ta: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(lr=6e-6))
    warmup_steps: Int = 0
    power: Float = 1.0
    min_lr_ratio: Float = 0.0
    decay_steps: OptInt = None
    grad_clip: OptFloat = None


class TrainSection(Section):
    """Schedule, precision and bookkeeping.

    ``amp``: ``auto`` (bf16 autocast on CUDA when supported, else fp16 with a grad scaler; off on CPU),
    ``bf16``, ``fp16`` or ``off``. ``freeze_norm``: batch-norm layers keep their pretrained running
    statistics (eval mode; affine parameters still train) — batches here are one panorama per rank.
    ``dropout``: leave dropout/drop-path active while training.
    """

    steps: Int = 1000
    seed: Int = 0
    amp: Str = "auto"
    freeze_norm: Bool = True
    dropout: Bool = True
    checkpoint_every: Int = 100
    keep_checkpoints: Int = 2
    log_every: Int = 1
    progress: Bool = True
    # Targets (E, M, B_ref, eq. 4) from an exponential moving average of the TA with this decay
    # (beyond the paper; 1.0 = the initial TA, frozen); null: from the TA being trained (the paper).
    ta_ema: OptFloat = None
    # With ta_ema 1.0: a folder caching the frozen target TA's window logits (shared by runs; the files
    # say what made them). null: computed every step.
    target_cache: OptStr = None
    # Run the adapting TA's windows one at a time under activation checkpointing (recomputed during the
    # backward): the memory of one window's activations instead of all of them, for about a third more
    # TA time; for TA input scales whose activations do not fit. One process only (no DDP).
    ta_checkpointing: Bool = False


class TrainConfig(Section):
    """One GoodSAM training setup (TA + student trained together, SAM frozen)."""

    name: Str = "custom"
    description: Str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    windows: WindowConfig = Field(default_factory=WindowConfig)
    sam: SAMConfig = Field(default_factory=SAMConfig)
    ta: TAConfig = Field(default_factory=lambda: TAConfig(architecture="espnetv2-s2.0"))
    student: StudentConfig = Field(default_factory=StudentConfig)
    fusion: FusionConfig = Field(default_factory=FusionConfig)
    loss: Annotated[LossWeights, ValidatedAs(LossSection)] = Field(default_factory=LossWeights)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainSection = Field(default_factory=TrainSection)

    def to_dict(self) -> dict:
        """Plain values (``betas``, ``ta_classes`` as lists; ``sam.settings``/``fusion.options``: the keys
        given)."""
        out = self.model_dump()
        out["optim"]["student"]["betas"] = list(out["optim"]["student"]["betas"])
        out["optim"]["ta"]["betas"] = list(out["optim"]["ta"]["betas"])
        if out["fusion"]["ta_classes"] is not None:
            out["fusion"]["ta_classes"] = list(out["fusion"]["ta_classes"])
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self) -> str:
        """SHA-256 (16 hex) of everything that changes the computation (not ``train.steps``, logging…)."""
        data = self.to_dict()
        added = [key for key, default in ADDED_KEY_DEFAULTS.items() if _lookup(data, key) == default]
        for key in (*NON_SEMANTIC_KEYS, *added):
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node.pop(last, None)
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def schedule_steps(self) -> int:
        return self.optim.decay_steps or self.train.steps


def _lookup(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node[part]
    return node


def available_configs() -> list[str]:
    """Names of the bundled configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _config_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        return path
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise ConfigError(f"unknown config '{name_or_path}'; bundled: {', '.join(available_configs())} "
                          "(or pass a YAML path)")
    return bundled


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The merged YAML mapping of a config (following ``base:``)."""
    path = _config_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError(f"config {path} includes itself through 'base:'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    base = data.pop("base", None)
    if base is None:
        return data
    base_ref = base if (CONFIG_DIR / f"{base}.yaml").is_file() else path.parent / str(base)
    return _deep_merge(load_raw(base_ref, (*_seen, path)), data)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``key.path=value`` overrides (YAML values) to a raw config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: '{part}' is not a section")
        node[parts[-1]] = value
    return data


def _config_error(exc: ValidationError) -> ConfigError:
    """One line for the first error: the key, the bad value and what is expected."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    kind, context, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "config_unknown":
        prefix = f"{where}." if where else ""
        return ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in context['unknown'])}; "
                           f"known in this section: {', '.join(context['known'])}")
    if kind == "config_section":
        return ConfigError(f"config section '{where or 'root'}' must be a mapping, got {value!r}")
    if kind == "config_null":
        return ConfigError(f"config key '{where}' must not be null")
    if kind == "config_value":
        return ConfigError(f"config key '{where}' {context['expected']}, got {value!r}")
    if kind == "config_message":
        return ConfigError(f"config key '{where}': {context['message']}")
    return ConfigError(f"config key '{where}': {error['msg']}, got {value!r}")


def _check_fusion_options(config: TrainConfig) -> None:
    """``fusion.options`` must be keyword options of ``fusion.method``'s function."""
    method = config.fusion.method.lower()
    accepted = keyword_defaults(FUSIONS[method])
    unknown = [key for key in config.fusion.options if key not in accepted]
    if unknown:
        raise ConfigError(f"{config.name}: fusion.options {', '.join(unknown)} not taken by {method} "
                          f"(its options: {', '.join(accepted)})")


def validate(config: TrainConfig) -> TrainConfig:
    """Range checks that the types alone do not catch."""
    checks = [
        (config.data.height > 0 and config.data.width > 0, "data.height and data.width must be positive"),
        (config.data.batch_size >= 1, "data.batch_size must be at least 1"),
        (config.windows.width > 0 and 0 < config.windows.stride <= config.windows.width,
         "windows.stride must be in 1..windows.width"),
        (config.train.steps >= 0, "train.steps must be >= 0"),
        (config.train.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
        (config.train.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (config.train.amp in ("auto", "bf16", "fp16", "off"), "train.amp must be auto, bf16, fp16 or off"),
        (config.fusion.method.lower() in ("ctcf", "ssa", "sepl"), "fusion.method must be ctcf, ssa or sepl"),
        (config.fusion.uncertain in ("paper", "ta"), "fusion.uncertain must be paper or ta"),
        (config.train.ta_ema is None or 0 <= config.train.ta_ema <= 1,
         "train.ta_ema must be in [0, 1] or null"),
        (config.fusion.ta_confidence is None or 0 < config.fusion.ta_confidence <= 1,
         "fusion.ta_confidence must be in (0, 1] or null"),
        (config.loss.boundary_form in ("paper", "disagreement"),
         "loss.boundary_form must be paper or disagreement"),
        (config.loss.eq4_target in ("hard", "soft"), "loss.eq4_target must be hard or soft"),
        (config.data.resample_max >= 1, "data.resample_max must be >= 1"),
        (config.optim.student.lr >= 0 and config.optim.ta.lr >= 0, "learning rates must be >= 0"),
        (config.optim.grad_clip is None or config.optim.grad_clip > 0, "optim.grad_clip must be > 0 or null"),
        (all(v >= 0 for v in config.loss.term_weights().values()), "loss weights must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{config.name}: {message}")
    _check_fusion_options(config)
    for model in (config.ta, config.student):  # 'auto' needs a model of known training density
        resolve_scale(model.scale, model.architecture, config.data.width)
    return config


def config_from_dict(data: dict) -> TrainConfig:
    """A validated :class:`TrainConfig` from a raw mapping."""
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc) from None
    return validate(config)


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a bundled config by name (or a YAML path), apply ``--set`` overrides, validate."""
    return config_from_dict(apply_overrides(load_raw(name_or_path), overrides))
