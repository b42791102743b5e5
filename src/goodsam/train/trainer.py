"""The GoodSAM training loop: TA and student trained together, SAM frozen (its masks are cached).

One step, for each panorama of the (rank's share of the) global batch:

1. crop the sliding windows ``W_i``; TA forward on them **with gradient** -> ``S_i``;
2. fuse (CTCF, eq. 3) the cached SAM masks of every window with the current ``S_i`` -> ``E_i, M_i``;
   refine the overlaps' boundaries -> ``B_ref``; tile the TA windows -> the eq. 4 target (no gradient);
3. student forward on the whole (augmented, see :mod:`goodsam.train.augment`) panorama, logits mapped
   back to the original orientation;
4. the MKA/DAR losses (:func:`goodsam.mka.panorama_losses`), ``L_student + L_TA`` back-propagated
   (each reaches only its own model), divided by the number of panoramas.

Then both AdamW optimisers step (optional gradient clipping per model), with a warm-up + polynomial
learning-rate schedule that is a pure function of the step. Mixed precision on CUDA (bf16 autocast
when supported, else fp16 with a gradient scaler). Everything random is either seeded per
``(seed, step, sample)`` or saved in the checkpoint, so ``--resume`` continues bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn
from tqdm import tqdm

from goodsam.devices import auto_device, keep_freed_memory
from goodsam.errors import ConfigError
from goodsam.fileio import atomic_write_text
from goodsam.imageio import resample
from goodsam.mka.losses import TA_TERMS, LossWeights, PanoramaTargets, panorama_losses, panorama_targets
from goodsam.model_format import export_model
from goodsam.panorama.windows import WindowLayout, crop_windows, sliding_windows
from goodsam.profiling import StageTimer, stage, timed_method
from goodsam.segmenters.registry import build_segmenter
from goodsam.segmenters.scale import forward_at_scale, resolve_scale
from goodsam.train import augment
from goodsam.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from goodsam.train.config import TrainConfig
from goodsam.train.data import PanoramaDataset, TrainingSample, global_indices, rank_indices
from goodsam.train.distributed import all_reduce_mean, barrier, broadcast_object, current, wrap_ddp
from goodsam.train.monitor import RunMonitor, read_metrics
from goodsam.train.target_cache import TargetLogitCache, weights_digest
from goodsam.train.validation import Validation, append_jsonl, plot_validation_curve

ModelFactory = Callable[[TrainConfig, torch.device], tuple[nn.Module, nn.Module]]


def recorded_train_seconds(run_dir: str | Path, step: int | None = None) -> float | None:
    """The training wall a run's ``run.json`` records, summed over its invocations (runs from before
    ``total_seconds``: their last invocation's); None without one, or when it was written at another step
    than ``step``."""
    try:
        summary = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if step is not None and summary.get("step") != step:
        return None
    return summary.get("total_seconds", summary.get("seconds"))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: full precision). CPU: always None."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier of (0-based) step ``step``: linear warm-up, then polynomial decay."""
    optim = config.optim
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    total = max(config.schedule_steps, 1)
    progress = min(max(step - optim.warmup_steps, 0) / max(total - optim.warmup_steps, 1), 1.0)
    return max((1.0 - progress) ** optim.power, optim.min_lr_ratio)


def set_train_mode(model: nn.Module, freeze_norm: bool, dropout: bool) -> None:
    """``model.train()``, then batch-norm layers (``freeze_norm``) and dropout (not ``dropout``) to eval."""
    model.train()
    for module in model.modules():
        if freeze_norm and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
        name = type(module).__name__.lower()
        if not dropout and ("dropout" in name or "droppath" in name):
            module.eval()


def build_models(config: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The TA and the student from the zoo (``goodsam.segmenters.build_segmenter``)."""
    ta = build_segmenter(config.ta.architecture, weights=config.ta.weights, pretrained=config.ta.pretrained,
                         device=str(device))
    student = build_segmenter(config.student.architecture, weights=config.student.weights,
                              pretrained=config.student.pretrained, device=str(device))
    return ta.to(device), student.to(device)


def make_layout(config: TrainConfig) -> WindowLayout:
    return sliding_windows(config.data.height, config.data.width, config.windows.width, config.windows.stride,
                           config.windows.wrap)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: final step, per-step mean losses, where the student was exported."""

    run_dir: Path
    step: int
    history: list[dict] = field(default_factory=list)
    student_dir: Path | None = None
    seconds: float = 0.0


class Trainer:
    """TA + student training for one run folder (see the module docstring).

    ``model_factory(config, device) -> (ta, student)`` replaces the zoo (called after seeding).
    ``timer``: set a :class:`goodsam.profiling.StageTimer` to time the stages of :meth:`train_step`.
    """

    timer: StageTimer | None = None

    def __init__(self, config: TrainConfig, data_dir: str | Path, masks_dir: str | Path,
                 run_dir: str | Path, *, device: str = "auto", resume: bool = False,
                 force_resume: bool = False, progress: bool | None = None, tensorboard: bool = True,
                 model_factory: ModelFactory | None = None, validation: Validation | None = None):
        self.config = config
        self.validation = validation
        self.ta_scale = resolve_scale(config.ta.scale, config.ta.architecture, config.data.width)
        self.student_scale = resolve_scale(config.student.scale, config.student.architecture,
                                           config.data.width)
        self.info = current()
        self.device = auto_device(device, self.info.local_rank)
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults for every activation of every step
        self.run_dir = Path(run_dir)
        self.layout = make_layout(config)
        self.weights = config.loss
        self.show_progress = config.train.progress if progress is None else progress
        self.dataset = PanoramaDataset(data_dir, masks_dir, self.layout)
        rank_indices(list(range(config.data.batch_size)), 0, self.info.world_size)  # batch divides evenly
        seed_everything(config.train.seed)
        ta, student = (model_factory or build_models)(config, self.device)
        self.ta_module, self.student_module = ta.to(self.device), student.to(self.device)
        self.autocast_dtype = amp_dtype(config.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self.optimizers = {
            "student": self._adamw(self.student_module, config.optim.student),
            "ta": self._adamw(self.ta_module, config.optim.ta),
        }
        self.step = 0
        self.seconds_before = 0.0  # training wall of earlier invocations of this run (from the checkpoint)
        self._fit_start: float | None = None
        self.ta_ema: nn.Module | None = None
        if config.train.ta_ema is not None:  # targets from a moving average of the TA (a safeguard)
            self.ta_ema = copy.deepcopy(self.ta_module).requires_grad_(False)
        self._restore(resume, force_resume)
        self.target_cache = None
        if self.ta_ema is not None and config.train.ta_ema == 1.0 and config.train.target_cache:
            identity = {"ta": weights_digest(self.ta_ema), "scale": self.ta_scale,
                        "layout": self.layout.as_dict(), "amp": str(self.autocast_dtype),
                        "freeze_norm": config.train.freeze_norm}
            self.target_cache = TargetLogitCache(config.train.target_cache, identity)
        self.ta_terms_on = any(self.weights.term_weights()[name] for name in TA_TERMS)
        # With the initial TA frozen as the target TA (ta_ema 1.0) a panorama's targets (eq. 3 fusion, B_ref,
        # eq. 4 tiling) never change: made once per panorama and kept; a TA term still runs the live TA.
        self.memoize_targets = config.train.ta_ema == 1.0
        self._frozen_targets: dict[int, PanoramaTargets] = {}
        if config.train.ta_checkpointing and self.info.world_size > 1:
            raise ConfigError("train.ta_checkpointing runs in one process: train without torchrun "
                              "(or with --nproc_per_node=1)")
        self.ta = wrap_ddp(self.ta_module, self.info, self.device)
        self.student = wrap_ddp(self.student_module, self.info, self.device)
        self.monitor: RunMonitor | None = None
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", config.to_yaml())
            self.monitor = RunMonitor(self.run_dir, self.step, tensorboard=tensorboard)
            val_log = self.run_dir / "validation.jsonl"  # drop records after the checkpoint, as metrics.jsonl
            kept = [r for r in read_metrics(val_log) if r.get("step", 0) <= self.step]
            atomic_write_text(val_log, "".join(json.dumps(r) + "\n" for r in kept))

    @staticmethod
    def _adamw(model: nn.Module, cfg) -> torch.optim.AdamW:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    # ----------------------------------------------------------------------------------- resume
    def _restore(self, resume: bool, force_resume: bool) -> None:
        found = latest_checkpoint(self.run_dir)
        seen_by_main = broadcast_object(found.name if found else None)
        if (found.name if found else None) != seen_by_main:
            raise ConfigError(f"rank {self.info.rank} sees another checkpoint in {self.run_dir} than rank 0; "
                              "every process must see the same --out folder (a shared filesystem)")
        if found is None:
            return
        if not resume:
            raise ConfigError(f"{self.run_dir} already holds a run (checkpoint {found.name}); pass --resume "
                              "to continue it or choose another --out")
        ckpt = load_checkpoint(found)
        if ckpt.config_hash != self.config.hash() and not force_resume:
            raise ConfigError(f"the configuration differs from the one {self.run_dir} was trained with "
                              f"(hash {ckpt.config_hash} vs {self.config.hash()}); pass --force-resume to "
                              "continue anyway, or use another --out")
        try:
            self.ta_module.load_state_dict(ckpt.ta)
            self.student_module.load_state_dict(ckpt.student)
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(ckpt.optimizers[name])
        except (RuntimeError, KeyError, ValueError) as exc:  # even --force-resume cannot change the models
            first = str(exc).strip().splitlines()[0][:300]
            raise CheckpointError(f"{found} does not fit these models ({first}); use another --out") from None
        if self.ta_ema is not None:
            if ckpt.ta_ema is None:
                raise CheckpointError(f"{found} has no moving-average TA (train.ta_ema); use another --out")
            self.ta_ema.load_state_dict(ckpt.ta_ema)
        if ckpt.scaler and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt.scaler)
        set_rng_state(ckpt.rng_info, ckpt.rng_tensors)
        self.step = ckpt.step
        seconds = ckpt.extra.get("train_seconds")
        if seconds is None:  # a checkpoint from before train_seconds: its run.json, if it ended there
            seconds = recorded_train_seconds(self.run_dir, step=ckpt.step)
        self.seconds_before = float(seconds or 0.0)

    # ------------------------------------------------------------------------------- one panorama
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def sample_losses(self, sample: TrainingSample, step: int | None) -> dict[str, torch.Tensor]:
        """All loss terms of one panorama; ``step=None``: no augmentation (fixed evaluation)."""
        cfg = self.config
        image = sample.image.to(self.device)
        if self.memoize_targets and sample.index in self._frozen_targets:
            targets = self._frozen_targets[sample.index]
            ta_logits = self._live_ta_logits(image) if self.ta_terms_on else None
        else:
            targets, ta_logits = self._targets(sample, image)
            if self.memoize_targets:
                self._frozen_targets[sample.index] = targets
        aug, student_image = augment.Augmentation(self.layout.width), image
        if step is not None:
            aug = augment.sample_augmentation(self.layout.width, cfg.train.seed, step, sample.index,
                                              cfg.data.roll, cfg.data.flip)
            factor = augment.sample_detail_factor(cfg.train.seed, step, sample.index, cfg.data.resample_max)
            if factor > 1:
                pixels = resample(np.ascontiguousarray(sample.image.permute(1, 2, 0).numpy()), factor)
                student_image = torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)
        with stage("student forward"):
            student_in = augment.apply(student_image[None].float(), aug)
            with self._autocast():
                student_logits = forward_at_scale(
                    lambda x: self.student(self.student_module.preprocess(x)).logits, student_in,
                    self.student_scale).float()
            student_logits = augment.invert(student_logits.squeeze(0), aug)
        with stage("losses"):
            return panorama_losses(student_logits, ta_logits, self.layout, targets, self.weights)

    def _targets(self, sample: TrainingSample, image: torch.Tensor) -> tuple[PanoramaTargets, torch.Tensor]:
        """The targets of one panorama and the TA's window logits (with gradient when a TA term is on)."""
        cfg = self.config
        windows = crop_windows(image, self.layout).float()  # (N, 3, H, w)
        with self._autocast():
            target_logits = None
            if self.ta_ema is not None:
                with torch.no_grad():
                    def frozen() -> torch.Tensor:
                        return self._ta_logits(self.ta_ema, self.ta_ema, windows)

                    target_logits = (self.target_cache.get(sample.name, frozen, self.device)
                                     if self.target_cache is not None else frozen())
        # The TA runs with gradient when one of its terms is on (or it makes the targets itself).
        ta_logits = target_logits
        if self.ta_terms_on or target_logits is None:
            ta_logits = self._live_ta_logits(image, windows)
        if target_logits is None:
            target_logits = ta_logits
        void = None
        if cfg.data.void_rgb is not None:
            colour = torch.tensor(cfg.data.void_rgb, device=image.device, dtype=image.dtype)
            void = (image == colour[:, None, None]).all(0)
        targets = panorama_targets(target_logits, self.layout, sample.window_masks, sample.overlap_boundaries,
                                   cfg.fusion.method, cfg.fusion.options, cfg.fusion.alpha, void=void,
                                   ta_confidence=cfg.fusion.ta_confidence, uncertain=cfg.fusion.uncertain,
                                   ta_classes=cfg.fusion.ta_classes)
        return targets, ta_logits

    def _live_ta_logits(self, image: torch.Tensor, windows: torch.Tensor | None = None) -> torch.Tensor:
        """The trained TA's window logits of ``image`` (with gradient where enabled)."""
        if windows is None:
            windows = crop_windows(image, self.layout).float()
        with stage("TA forward"), self._autocast():
            return self._ta_logits(self.ta, self.ta_module, windows)

    def _ta_logits(self, model: nn.Module, module: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        """TA logits ``(N, C, H, w)`` of float RGB windows at the TA's input scale (``ta.scale``); with a
        gradient and ``train.ta_checkpointing``, one window at a time under activation checkpointing."""
        def forward(images: torch.Tensor) -> torch.Tensor:
            logits = forward_at_scale(lambda x: model(module.preprocess(x)).logits, images, self.ta_scale)
            return logits.float()

        if self.config.train.ta_checkpointing and torch.is_grad_enabled():
            checkpoint = torch.utils.checkpoint.checkpoint
            return torch.cat([checkpoint(forward, windows[i:i + 1], use_reentrant=False)
                              for i in range(len(windows))])
        return forward(windows)

    def _update_ema(self) -> None:
        """``ema = d·ema + (1 - d)·ta`` for parameters; buffers (batch-norm statistics) copied."""
        if self.ta_ema is None or self.config.train.ta_ema == 1.0:
            return
        decay = float(self.config.train.ta_ema)
        with torch.no_grad():
            for ema, live in zip(self.ta_ema.parameters(), self.ta_module.parameters(), strict=True):
                ema.lerp_(live.detach(), 1.0 - decay)
            for ema, live in zip(self.ta_ema.buffers(), self.ta_module.buffers(), strict=True):
                ema.copy_(live)

    # ----------------------------------------------------------------------------------- one step
    def _set_lr(self, step: int) -> dict[str, float]:
        factor = lr_factor(step, self.config)
        lrs = {}
        for name, optimizer in self.optimizers.items():
            base = getattr(self.config.optim, name).lr
            for group in optimizer.param_groups:
                group["lr"] = base * factor
            lrs[f"lr_{name}"] = base * factor
        return lrs

    def _no_sync(self, last: bool):
        stack = contextlib.ExitStack()
        if not last:
            for model in (self.ta, self.student):
                if hasattr(model, "no_sync"):
                    stack.enter_context(model.no_sync())
        return stack

    @timed_method
    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step of both models (0-based ``step``); returns the mean loss terms and LRs."""
        cfg = self.config
        indices = global_indices(step, cfg.data.batch_size, len(self.dataset), cfg.train.seed)
        mine = rank_indices(indices, self.info.rank, self.info.world_size)
        set_train_mode(self.ta_module, cfg.train.freeze_norm, cfg.train.dropout)
        set_train_mode(self.student_module, cfg.train.freeze_norm, cfg.train.dropout)
        if self.ta_ema is not None:
            set_train_mode(self.ta_ema, cfg.train.freeze_norm, False)
        lrs = self._set_lr(step)
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = defaultdict(float)
        for k, index in enumerate(mine):
            with self._no_sync(last=k == len(mine) - 1):
                with stage("data + mask decoding"):
                    sample = self.dataset[index]
                terms = self.sample_losses(sample, step)
                # The two totals have disjoint graphs (every target is detached): backward each on its
                # own (the same gradients as one backward of their sum), so each can be timed.
                for key, label in (("student", "student backward"), ("ta", "TA backward")):
                    with stage(label):
                        total = terms[key] / len(mine)
                        if total.requires_grad:  # e.g. not with a frozen TA
                            self.scaler.scale(total).backward()
            for key, value in terms.items():
                sums[key] += float(value.detach()) / len(mine)
        with stage("optimiser"):
            for name, model in (("student", self.student_module), ("ta", self.ta_module)):
                optimizer = self.optimizers[name]
                if cfg.optim.grad_clip:
                    self.scaler.unscale_(optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    sums[f"grad_norm_{name}"] = float(norm)
                self.scaler.step(optimizer)
            self.scaler.update()
            self._update_ema()
        keys = sorted(sums)
        reduced = all_reduce_mean(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        scalars = dict(zip(keys, reduced.tolist(), strict=True))
        scalars["total"] = scalars["student"] + scalars["ta"]
        scalars.update(lrs)
        return scalars

    @torch.no_grad()
    def evaluate(self, indices: list[int]) -> dict[str, float]:
        """Mean loss terms on fixed panoramas, without augmentation or any update (eval of norm/dropout
        exactly as in training)."""
        set_train_mode(self.ta_module, self.config.train.freeze_norm, False)
        set_train_mode(self.student_module, self.config.train.freeze_norm, False)
        sums: dict[str, float] = defaultdict(float)
        for index in indices:
            for key, value in self.sample_losses(self.dataset[index], None).items():
                sums[key] += float(value) / len(indices)
        out = dict(sums)
        out["total"] = out["student"] + out["ta"]
        return out

    # -------------------------------------------------------------------------------------- loop
    def save(self, final: bool = False) -> Path | None:
        """Checkpoint the current step (main process) and export the student (and, when ``final``, the
        adapted TA); all ranks wait."""
        path = None
        if self.info.is_main:
            scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
            path = save_checkpoint(self.run_dir, self.step, self.config.hash(), self.ta_module,
                                   self.student_module, self.optimizers, scaler,
                                   keep=self.config.train.keep_checkpoints, ta_ema=self.ta_ema,
                                   extra={"train_seconds": self.train_seconds()})
            self.export(with_ta=final)
            if self.monitor:
                self.monitor.flush()
        barrier()
        return path

    def prepare_targets(self) -> int:
        """Fill the frozen-TA target cache for every panorama first (each rank its share; progress bar).

        Returns how many panoramas this rank computed. No-op without ``train.target_cache``."""
        if self.target_cache is None:
            return 0
        mine = [i for i in range(len(self.dataset)) if i % self.info.world_size == self.info.rank]
        todo = [i for i in mine if not self.target_cache.has(self.dataset.paths[i].name)]
        show = self.info.is_main and self.show_progress
        bar = tqdm(todo, desc="TA targets", unit="pano", disable=not show)
        set_train_mode(self.ta_ema, self.config.train.freeze_norm, False)
        for index in bar:
            image = self.dataset.load_image(index).to(self.device)
            windows = crop_windows(image, self.layout).float()
            with torch.no_grad(), self._autocast():
                self.target_cache.get(self.dataset.paths[index].name,
                                      lambda w=windows: self._ta_logits(self.ta_ema, self.ta_ema, w))
        barrier()
        return len(todo)

    def validate(self, last: bool = False) -> dict[str, float] | None:
        """Score student and TA on the validation set (all ranks; logged by the main process)."""
        if self.validation is None:
            return None
        cfg = self.config
        ta = self.ta_module if self.ta_terms_on else None  # an untrained TA is scored by `goodsam eval`
        results = self.validation.score(self.student_module, ta, window=cfg.windows.width,
                                        stride=cfg.windows.stride, wrap=cfg.windows.wrap,
                                        ta_scale=self.ta_scale, student_scale=self.student_scale,
                                        rank=self.info.rank,
                                        world_size=self.info.world_size)
        scalars = {f"val/{name}_miou": float(r["miou"] or 0.0) for name, r in results.items()}
        if self.monitor is not None:
            self.monitor.log(self.step, scalars)
            append_jsonl(self.run_dir / "validation.jsonl",
                         {"step": self.step, **{n: {"miou": r["miou"], "per_class": r["per_class"]}
                                                for n, r in results.items()}})
            plot_validation_curve(self.monitor.records, self.run_dir / "validation_curve.png")
        return scalars

    def export(self, with_ta: bool = False) -> Path:
        """Write ``RUN_DIR/student`` (and ``RUN_DIR/ta`` with ``with_ta``) in the format predict loads.

        The TA is written only at the end of training (it can be large, e.g. SegFormer-B5); every
        checkpoint holds it anyway.
        """
        source = f"goodsam train {self.config.name} ({self.run_dir.name}, step {self.step})"
        extra = {"step": self.step, "config": self.config.name, "config_hash": self.config.hash()}
        scale = {"input_scale": self.student_scale} if self.student_scale != 1.0 else {}
        if with_ta:
            export_model(self.ta_module, self.run_dir / "ta", self.config.ta.architecture, source,
                         extra=extra)
        return export_model(self.student_module, self.run_dir / "student", self.config.student.architecture,
                            source, extra={**extra, **scale})

    def train_seconds(self) -> float:
        """The run's training wall so far: earlier invocations (as checkpointed) plus this one's."""
        now = 0.0 if self._fit_start is None else time.perf_counter() - self._fit_start
        return self.seconds_before + now

    def fit(self, steps: int | None = None) -> TrainResult:
        """Train until ``steps`` (default ``train.steps``) optimiser steps are done; checkpoint on the way."""
        total = self.config.train.steps if steps is None else steps
        start_time = self._fit_start = time.perf_counter()
        history: list[dict] = []
        saved_at = None
        bar = tqdm(total=total, initial=min(self.step, total), desc="train", unit="step",
                   disable=not (self.info.is_main and self.show_progress), dynamic_ncols=True)
        try:
            self.prepare_targets()
            if self.step == 0 and total > 0:
                self.validate(last=False)
            while self.step < total:
                scalars = self.train_step(self.step)
                self.step += 1
                history.append({"step": self.step, **scalars})
                if not all(math.isfinite(scalars[k]) for k in ("student", "ta")):
                    raise ConfigError(f"loss became {scalars['total']} at step {self.step}; lower the "
                                      "learning rates or enable optim.grad_clip")
                if self.monitor and (self.step % self.config.train.log_every == 0 or self.step == total):
                    self.monitor.log(self.step, scalars)
                bar.update(1)
                bar.set_postfix(student=f"{scalars['student']:.3f}", ta=f"{scalars['ta']:.3f}")
                if self.validation is not None and self.validation.due(self.step, self.step == total):
                    self.validate(last=self.step == total)
                if self.step % self.config.train.checkpoint_every == 0 or self.step == total:
                    self.save(final=self.step == total)
                    saved_at = self.step
        finally:
            bar.close()
            if self.monitor:
                self.monitor.flush()
        student_dir = self.run_dir / "student"
        if saved_at != self.step:  # nothing left to train (e.g. resumed at the end): still export
            self.save(final=True)
        if self.info.is_main:
            elapsed = time.perf_counter() - start_time  # one clock read: total = earlier runs + this one
            summary = {"step": self.step, "seconds": elapsed, "total_seconds": self.seconds_before + elapsed,
                       "config_hash": self.config.hash()}
            atomic_write_text(self.run_dir / "run.json", json.dumps(summary, indent=2) + "\n")
        return TrainResult(self.run_dir, self.step, history, student_dir, time.perf_counter() - start_time)

    def close(self) -> None:
        if self.monitor:
            self.monitor.close()


def train(config: TrainConfig, data_dir: str | Path, masks_dir: str | Path, run_dir: str | Path, *,
          steps: int | None = None, device: str = "auto", resume: bool = False, force_resume: bool = False,
          progress: bool | None = None, tensorboard: bool = True,
          validation: Validation | None = None) -> TrainResult:
    """Build a :class:`Trainer` and run it to ``steps`` (the library entry point behind ``goodsam train``)."""
    trainer = Trainer(config, data_dir, masks_dir, run_dir, device=device, resume=resume,
                      force_resume=force_resume, progress=progress, tensorboard=tensorboard,
                      validation=validation)
    try:
        return trainer.fit(steps)
    finally:
        trainer.close()


__all__ = ["LossWeights", "TrainResult", "Trainer", "Validation", "amp_dtype", "lr_factor", "seed_everything",
           "train"]
