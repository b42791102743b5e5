"""Optional wall-clock profiling of named stages (e.g. one training step split by what it does).

Library code marks its stages with ``with stage("fusion"): ...``; that is a no-op unless a
:class:`StageTimer` is active (:func:`use_timer`, or :func:`timed_method` on a method of an object with
a ``timer`` attribute). On CUDA the timer synchronises the device at every stage boundary, so a stage's
time includes the kernels it launched (this slows the step a little; it is off unless asked for).
Stages should not nest: a nested stage's time would be counted twice.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
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
