"""Optional wall-clock profiling of named stages (e.g. one training step split by what it does).

Library code marks its stages with ``with stage("fusion"): ...``; that is a no-op unless a
:class:`StageTimer` is active (:func:`use_timer`, or :func:`timed_method` on a method of an object with
a ``timer`` attribute). On CUDA the timer synchronises the device at every stage boundary, so a stage's
time includes the kernels it launched (this slows the step a little; it is off unless asked for).
Stages should not nest: a nested stage's time would be counted twice. :func:`time_train_steps` times
whole training steps of a trainer by stage (the benchmarks and the GPU check use it).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

_ACTIVE: ContextVar[StageTimer | None] = ContextVar("goodsam_stage_timer", default=None)
F = TypeVar("F", bound=Callable[..., Any])


class StageTimer:
    """Accumulated seconds (and call counts) per stage name, in the order stages first ran."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (added to earlier times of the same name)."""
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

    def reset(self) -> None:
        """Forget all times."""
        self.seconds.clear()
        self.calls.clear()

    def snapshot(self) -> dict[str, float]:
        """A copy of the seconds per stage."""
        return dict(self.seconds)


@contextlib.contextmanager
def use_timer(timer: StageTimer | None) -> Iterator[StageTimer | None]:
    """Make ``timer`` the active one inside the block (None: keep whatever is active)."""
    if timer is None:
        yield _ACTIVE.get()
        return
    token = _ACTIVE.set(timer)
    try:
        yield timer
    finally:
        _ACTIVE.reset(token)


def stage(name: str) -> contextlib.AbstractContextManager:
    """``with stage(name):`` times the block on the active :class:`StageTimer`; a no-op without one."""
    timer = _ACTIVE.get()
    return contextlib.nullcontext() if timer is None else timer.stage(name)


def timed_method(method: F) -> F:
    """Decorator: run the method with ``self.timer`` (a :class:`StageTimer` or None) active."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with use_timer(getattr(self, "timer", None)):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class StepTiming:
    """One timed training step: wall seconds, seconds per stage, its logged scalars, peak GPU GiB."""

    seconds: float
    stages: dict[str, float]
    scalars: dict[str, float]
    peak_gib: float | None  # None on the CPU


def time_train_steps(trainer: Any, steps: int,
                     on_step: Callable[[int, StepTiming], None] | None = None) -> list[StepTiming]:
    """Run ``trainer.train_step(k)`` for ``k < steps`` with a :class:`StageTimer` as ``trainer.timer``.

    ``trainer`` needs ``device``, ``timer`` and ``train_step`` (a :class:`goodsam.train.trainer.Trainer`);
    on CUDA the device is synchronised around each step and its peak memory reset before it.
    """
    device = torch.device(trainer.device)
    cuda = device.type == "cuda"
    trainer.timer = timer = StageTimer(device)
    out = []
    for step in range(steps):
        timer.reset()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        scalars = trainer.train_step(step)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        out.append(StepTiming(seconds, timer.snapshot(), scalars, peak))
        if on_step is not None:
            on_step(step, out[-1])
    return out
