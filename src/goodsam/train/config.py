"""Training configuration: YAML files (``train/configs/*.yaml``) -> a typed, validated :class:`TrainConfig`.

A config names a bundled setup (``nano-s0.5``, ``goodsam-t`` …) or a YAML path. A YAML file may start
from another with ``base: NAME_OR_PATH`` (deep-merged, the file's own keys win). ``--set a.b=value``
overrides are applied last; values are parsed as YAML (``--set optim.student.lr=1e-4``,
``--set loss.eq7_student_boundary=0``, ``--set ta.weights=null``). Unknown keys are errors.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from goodsam.errors import ConfigError
from goodsam.mka.losses import LossWeights
from goodsam.segmenters.scale import parse_scale, resolve_scale

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Keys that do not change what is computed: they may differ when a run is resumed.
NON_SEMANTIC_KEYS = ("name", "description", "train.steps", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.log_every", "train.progress", "train.target_cache")
# Keys added after runs were made: at these values they compute what the older configs did, so they
# stay out of the hash and those runs still resume.
ADDED_KEY_DEFAULTS = {"ta.scale": 1.0, "fusion.ta_confidence": None, "fusion.uncertain": "paper",
                      "loss.boundary_form": "paper", "train.ta_ema": None}


@dataclass
class DataConfig:
    """Panoramas are resized to a fixed ERP band ``height x width``; ``batch_size`` is global (all ranks)."""

    height: int = 400
    width: int = 2048
    batch_size: int = 1
    roll: bool = True
    flip: bool = True
    # Pixels of exactly this RGB colour are not part of the scene (e.g. the black fill around frames
    # projected by `goodsam data pinhole-to-erp`): no loss term uses them. null: every pixel counts.
    void_rgb: tuple[int, int, int] | None = None


@dataclass
class WindowConfig:
    """Sliding windows (full panorama height) of ``width`` columns every ``stride`` columns."""

    width: int = 512
    stride: int = 256
    wrap: bool = False


@dataclass
class ModelConfig:
    """A segmenter from the zoo (``goodsam.segmenters.build_segmenter``)."""

    architecture: str = "espnetv2-s0.5"
    weights: str | None = None
    pretrained: bool = True


@dataclass
class TAConfig(ModelConfig):
    """The TA and its input ``scale`` (a number or ``auto``; see :mod:`goodsam.segmenters.scale`): every
    window is resized by it before the TA wherever the TA runs (targets of eq. 1-4 and 6)."""

    scale: float | str = 1.0


@dataclass
class SAMConfig:
    """The frozen SAM used (only) to fill the mask cache; ``settings`` are ``AMGSettings`` fields."""

    model: str = "mobile_sam"
    weights: str | None = None
    impl: str = "fast"
    settings: dict = field(default_factory=dict)

    def amg_settings(self):
        """``settings`` as :class:`goodsam.sam.base.AMGSettings` (unknown keys: :class:`ConfigError`)."""
        from goodsam.sam.base import AMGSettings

        try:
            return AMGSettings(**self.settings)
        except TypeError as exc:
            raise ConfigError(f"sam.settings: {exc}") from None


@dataclass
class FusionConfig:
    """Eq. 3 fusion (``ctcf``, ``ssa`` or ``sepl``) + options; ``alpha``: B_ref's top-2 gap threshold.

    Safeguards beyond the paper (null/``paper`` = the paper's rule), see :mod:`goodsam.dar.safeguards`:
    ``ta_confidence``: inside a mask, pixels whose TA top probability reaches it keep the TA's label;
    ``uncertain``: ``paper`` (CTCF's weight-0 masks take the lowest-entropy label) or ``ta`` (they take
    the TA's own per-pixel labels: the mask decides nothing it is not confident about).
    """

    method: str = "ctcf"
    options: dict = field(default_factory=dict)
    alpha: float = 0.3
    ta_confidence: float | None = None
    uncertain: str = "paper"


@dataclass
class OptimizerConfig:
    """AdamW of one model."""

    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class OptimConfig:
    """Two AdamW optimisers and their shared schedule: linear warm-up, then polynomial decay.

    ``decay_steps``: the schedule's horizon (``null`` = ``train.steps``); fix it to extend runs without
    changing the learning rate of steps already planned.
    """

    student: OptimizerConfig = field(default_factory=OptimizerConfig)
    ta: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(lr=6e-6))
    warmup_steps: int = 0
    power: float = 1.0
    min_lr_ratio: float = 0.0
    decay_steps: int | None = None
    grad_clip: float | None = None


@dataclass
class TrainSection:
    """Schedule, precision and bookkeeping.

    ``amp``: ``auto`` (bf16 autocast on CUDA when supported, else fp16 with a grad scaler; off on CPU),
    ``bf16``, ``fp16`` or ``off``. ``freeze_norm``: batch-norm layers keep their pretrained running
    statistics (eval mode; affine parameters still train) — batches here are one panorama per rank.
    ``dropout``: leave dropout/drop-path active while training.
    """

    steps: int = 1000
    seed: int = 0
    amp: str = "auto"
    freeze_norm: bool = True
    dropout: bool = True
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    progress: bool = True
    # Targets (E, M, B_ref, eq. 4) from an exponential moving average of the TA with this decay
    # (beyond the paper; 1.0 = the initial TA, frozen); null: from the TA being trained (the paper).
    ta_ema: float | None = None
    # With ta_ema 1.0: a folder caching the frozen target TA's window logits (shared by runs; the files
    # say what made them). null: computed every step.
    target_cache: str | None = None


@dataclass
class TrainConfig:
    """One GoodSAM training setup (TA + student trained together, SAM frozen)."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    sam: SAMConfig = field(default_factory=SAMConfig)
    ta: TAConfig = field(default_factory=lambda: TAConfig("espnetv2-s2.0"))
    student: ModelConfig = field(default_factory=ModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["optim"]["student"]["betas"] = list(out["optim"]["student"]["betas"])
        out["optim"]["ta"]["betas"] = list(out["optim"]["ta"]["betas"])
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


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert one scalar against a type hint (int, float, bool, str, optional, tuple, dict)."""
    text = str(hint)
    optional = "None" in text
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{where}' must not be null")
    if text.startswith("float | str"):  # a scale: a positive number or 'auto'
        return parse_scale(value)
    if hint is bool or text.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{where}' must be true or false, got {value!r}")
        return value
    if hint is int or text.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{where}' must be an integer, got {value!r}")
        return value
    if hint is float or text.startswith("float"):
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{where}' must be a number, got {value!r}")
        return float(value)
    if hint is str or text.startswith("str"):
        return str(value)
    if text.startswith("tuple[int, int, int]"):
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
            raise ConfigError(f"config key '{where}' must be an RGB triple like [0, 0, 0], got {value!r}")
        return tuple(value)
    if text.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"config key '{where}' must be a pair of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if hint is dict or text.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
        return dict(value)
    return value


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"known in this section: {', '.join(sorted(known))}")
    default = cls()
    kwargs = {}
    for f in fields(cls):
        current = getattr(default, f.name)
        if f.name not in data:
            kwargs[f.name] = current
        elif is_dataclass(current):
            kwargs[f.name] = _build(type(current), data[f.name] or {}, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name)
    return cls(**kwargs)


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
        (config.optim.student.lr >= 0 and config.optim.ta.lr >= 0, "learning rates must be >= 0"),
        (config.optim.grad_clip is None or config.optim.grad_clip > 0, "optim.grad_clip must be > 0 or null"),
        (all(v >= 0 for v in config.loss.term_weights().values()), "loss weights must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{config.name}: {message}")
    resolve_scale(config.ta.scale, config.ta.architecture, config.data.width)  # 'auto' needs a known TA
    return config


def config_from_dict(data: dict) -> TrainConfig:
    """A validated :class:`TrainConfig` from a raw mapping."""
    return validate(_build(TrainConfig, data, ""))


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a bundled config by name (or a YAML path), apply ``--set`` overrides, validate."""
    return config_from_dict(apply_overrides(load_raw(name_or_path), overrides))
