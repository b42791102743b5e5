"""Shared helpers of ``benchmarks/ablations.py``: settings, JSON files, timed ``goodsam`` sub-processes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOODSAM = [sys.executable, "-m", "goodsam.cli"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


@dataclass
class Settings:
    """Everything that shapes the ablation run (full scale by default, tiny with ``--quick``)."""

    work: Path
    docs: Path
    quick: bool = False
    student: str = "espnetv2-s0.5"
    ta: str = "espnetv2-s2.0"
    steps: int = 36
    points_per_side: int = 8
    train_frames: int = 100
    eval_frames: int = 10
    frames_per_pano: int = 8
    eval_frames_per_pano: int = 5
    yaw_jitter: float = 2.0
    height: int = 400
    width: int = 2048
    window: int = 512
    stride: int = 256
    real_panoramas: int = 6
    threads: int = 2
    workers: int = 2  # training processes (gloo DDP, one thread each; equal to one process, and faster)
    seed: int = 0
    extra_overrides: list[str] = field(default_factory=list)

    @property
    def config(self) -> str:
        """The bundled nano config whose student is ``self.student``."""
        return "nano-s1.0" if self.student.endswith("s1.0") else "nano-s0.5"

    def as_dict(self) -> dict:
        out = asdict(self)
        out["work"], out["docs"] = str(self.work), str(self.docs)
        return out


def quick_settings(work: Path, docs: Path) -> Settings:
    """Every stage at tiny scale: 1 train + 1 eval panorama of 200x1024 (3 windows), 2 steps per run."""
    return Settings(work=work, docs=docs, quick=True, steps=2, points_per_side=4, train_frames=8,
                    eval_frames=4, frames_per_pano=8, eval_frames_per_pano=4, height=200, width=1024,
                    real_panoramas=1)


def train_overrides(settings: Settings) -> list[str]:
    """``--set`` overrides shared by every training run (sizes, SAM points, seed, checkpoints)."""
    overrides = [f"sam.settings.points_per_side={settings.points_per_side}",
                 f"data.height={settings.height}", f"data.width={settings.width}",
                 f"windows.width={settings.window}", f"windows.stride={settings.stride}",
                 f"train.seed={settings.seed}", f"train.checkpoint_every={max(1, settings.steps // 4)}",
                 f"student.architecture={settings.student}", f"ta.architecture={settings.ta}"]
    return overrides + list(settings.extra_overrides)


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable (then redone)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically (a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of every sub-process: at most ``threads`` CPU threads, no progress bars' noise."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def display(args: list[str]) -> str:
    """A command as a user would type it: ``goodsam …`` instead of ``python -m goodsam.cli …``."""
    if args[: len(GOODSAM)] == GOODSAM:
        args = ["goodsam", *args[len(GOODSAM):]]
    elif args[: len(TORCHRUN)] == TORCHRUN:
        args = ["torchrun", *args[len(TORCHRUN) - 1:]]
    return shlex.join(rel(a) for a in args)


def rel(text: str | Path) -> str:
    """Paths inside the repository shown relative to it."""
    text = str(text)
    prefix = str(REPO) + os.sep
    return text.replace(prefix, "") if prefix in text else text


def run_goodsam(args: list[str], threads: int, log: Path, processes: int = 1) -> float:
    """Run ``goodsam ARGS`` (output appended to ``log``); returns its wall time; raises on failure.

    ``processes`` > 1 launches it with ``torchrun`` (a gloo DDP job of single-threaded processes).
    """
    command = [*GOODSAM, *args]
    if processes > 1:
        command = [*TORCHRUN, f"--nproc_per_node={processes}", "-m", "goodsam.cli", *args]
        threads = 1
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as handle:
        handle.write(f"\n$ {display(command)}\n")
        handle.flush()
        result = subprocess.run(command, cwd=REPO, env=thread_env(threads), stdout=handle,
                                stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"command failed (exit {result.returncode}): {display(command)}\n"
                           + "\n".join(tail))
    return seconds
