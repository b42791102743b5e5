"""The README's main job (``goodsam demo``) — nano GoodSAM on the bundled real panoramas, on a CPU.

Stages (each resumable; rerunning skips finished work):

1. **panoramas** — every image of ``$GOODSAM_ASSETS/panoramas`` is fitted to a 400x2048 ERP band
   (:func:`goodsam.train.data.fit_erp_band`: full 2:1 equirectangular images are cropped to the 70.3°
   band of latitudes around the horizon, square pixels like DensePASS; PASS panoramas, already bands,
   are resized) and written to ``OUT/panoramas``;
2. **masks** — MobileSAM (fast generator, a modest point grid) on every window and overlap, cached in
   ``OUT/masks``;
3. **train** — the ``nano-s0.5`` setup (ESPNetv2-s2.0 TA + ESPNetv2-s0.5 student, both Cityscapes-
   pretrained, with its safeguards) for a short CPU schedule into ``OUT/run`` (checkpoints,
   ``metrics.jsonl``, ``loss_curve.png``, TensorBoard, the exported ``OUT/run/student``); the frozen
   target TA's window logits are cached in ``OUT/targets``;
4. **predict** — colour overlays and an HTML gallery of the student before (``OUT/predictions_before``)
   and after training (``OUT/predictions``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from goodsam.assets import find_asset
from goodsam.devices import auto_device
from goodsam.errors import ConfigError, GoodSAMError
from goodsam.inference import load_model
from goodsam.predict import predict_images
from goodsam.train.config import config_from_dict, load_config
from goodsam.train.data import fit_erp_folder
from goodsam.train.distributed import init_distributed, shutdown
from goodsam.train.monitor import read_metrics
from goodsam.train.pipeline import ensure_masks
from goodsam.train.trainer import train

# Peak memory of one nano training process at 400x2048 (TA activations of 7 windows dominate).
WORKER_MEMORY_BYTES = 6.5 * 2**30


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux ``MemAvailable``), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError, IndexError):
        return None


def default_workers(batch_size: int) -> int:
    """One process per CPU core, no more than the batch size or than the free memory allows."""
    workers = max(1, min(os.cpu_count() or 1, batch_size))
    free = available_memory()
    if free is None:
        return workers
    while workers > 1 and (workers * WORKER_MEMORY_BYTES > free or batch_size % workers):
        workers -= 1
    return workers


def _predict(model_ref: str | Path, images: Path, out_dir: Path, title: str, device: str) -> None:
    model = load_model(model_ref, device=device)
    predict_images(model, [images], out_dir, title=title)


def _stage(stage: str, cfg, out: Path, device: str, progress: bool, rank: int = 0, world: int = 1) -> None:
    """One stage of the demo in this process, in the demo folder ``out``: shard ``rank/world`` of the SAM
    masks (``masks``) or training, resumed (``train``)."""
    data, masks = out / "panoramas", out / "masks"
    if stage == "masks":
        ensure_masks(cfg, data, masks, device=device, rank=rank, world_size=world,
                     progress=progress and rank == 0)
    else:
        train(cfg, data, masks, out / "run", device=device, resume=True, progress=progress)


def _worker(stage: str, config: dict, out: Path, progress: bool) -> None:
    """One process of a ``torch.distributed.run`` job, single-threaded: its shard of the SAM masks
    (``stage`` ``masks``) or one rank of the gloo DDP training (``train``) in the demo folder ``out``."""
    torch.set_num_threads(1)
    cfg = config_from_dict(config)
    if stage == "masks":
        _stage(stage, cfg, out, "cpu", progress, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        return
    init_distributed("gloo")
    try:
        _stage(stage, cfg, out, "cpu", progress)
    finally:
        shutdown()


# Folder where a worker of :func:`_launch` leaves the message of its GoodSAMError (``rank<N>.txt``).
ERRORS_ENV = "GOODSAM_WORKER_ERRORS"


def _worker_main(argv: list[str]) -> int:
    """Entry of ``python -m goodsam.demo STAGE CONFIG_JSON OUT [--progress]`` (what
    :func:`_launch` starts): a :class:`GoodSAMError` is printed as one line, left for the launcher and
    exits with 1 (``torch.distributed.run`` then stops the other workers)."""
    stage, config, out, *flags = argv
    try:
        _worker(stage, json.loads(config), Path(out), "--progress" in flags)
    except GoodSAMError as exc:
        print(f"goodsam: error: {exc}", file=sys.stderr, flush=True)
        if os.environ.get(ERRORS_ENV):
            (Path(os.environ[ERRORS_ENV]) / f"rank{os.environ.get('RANK', '0')}.txt").write_text(str(exc))
        return 1
    return 0


def _launch(stage: str, config: dict, out: Path, workers: int, progress: bool, what: str) -> None:
    """Run ``stage`` in ``workers`` single-threaded processes started by ``torch.distributed.run``
    (the launcher of ``goodsam train``); a failure becomes one :class:`GoodSAMError` line."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={workers}",
               "-m", "goodsam.demo", stage, json.dumps(config), str(out)]
    if progress:
        command.append("--progress")
    with tempfile.TemporaryDirectory(prefix="goodsam-workers-") as errors:
        env = {**os.environ, "OMP_NUM_THREADS": "1", ERRORS_ENV: errors}
        code = subprocess.run(command, env=env, check=False).returncode
        messages = [path.read_text() for path in sorted(Path(errors).glob("rank*.txt"))]
    if code:
        reason = messages[0] if messages else f"torch.distributed.run exit code {code}, see above"
        raise GoodSAMError(f"{what} failed in a worker process: {reason}; rerun to resume")


def run_demo(out: str | Path, steps: int | None = None, config: str = "nano-s0.5",
             overrides: tuple[str, ...] = (), device: str = "auto", progress: bool = True,
             panoramas: str | Path | None = None, workers: int | None = None,
             log: Callable[[str], None] = print) -> dict:
    """The whole demo; returns timings (seconds per stage) and the first/last logged losses.

    ``workers`` processes (default: one per CPU core, at most the batch size, ~6.5 GB of free memory
    each; started by ``torch.distributed.run``, as for ``goodsam train``) share the SAM masks and train
    as a gloo DDP job, each single-threaded — on a small CPU this beats intra-op threads, and the result
    equals a one-process run (DDP averages the same global batch). On a GPU: one process. ``log``
    receives one line per stage.
    """
    out = Path(out)
    cfg = load_config(config, list(overrides))
    if steps is not None:
        if steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {steps}")
        cfg.train.steps = steps
    if cfg.train.ta_ema == 1.0 and cfg.train.target_cache is None:
        # the frozen target TA's window logits, computed once per panorama (the demo revisits each one)
        cfg.train.target_cache = str(out / "targets")
    torch_device = str(auto_device(device))
    if workers is None:
        workers = 1 if torch_device != "cpu" else default_workers(cfg.data.batch_size)
    if workers < 1 or cfg.data.batch_size % workers:
        raise ConfigError(f"--workers {workers} must divide data.batch_size {cfg.data.batch_size}")
    def run_stage(stage: str, what: str) -> None:
        if workers > 1:
            _launch(stage, cfg.to_dict(), out, workers, progress, what)
        else:
            _stage(stage, cfg, out, torch_device, progress)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    source = find_asset("panoramas", panoramas)
    images = fit_erp_folder(source, out / "panoramas", cfg.data.height, cfg.data.width)
    log(f"[demo] {len(images)} panoramas fitted to {cfg.data.height}x{cfg.data.width} in {out / 'panoramas'}")
    timings["panoramas"] = time.perf_counter() - start

    mark = time.perf_counter()
    log(f"[demo] SAM masks ({cfg.sam.model}, {cfg.sam.impl}, {workers} process(es)) -> {out / 'masks'}")
    run_stage("masks", "the masks stage")
    timings["masks"] = time.perf_counter() - mark

    before = out / "predictions_before"
    if not (before / "index.html").is_file():
        _predict(cfg.student.architecture, out / "panoramas", before,
                 f"{cfg.student.architecture} before GoodSAM (Cityscapes-pretrained)", torch_device)

    mark = time.perf_counter()
    log(f"[demo] training {cfg.name} for {cfg.train.steps} steps ({workers} process(es)) -> {out / 'run'}")
    run_stage("train", "training")
    timings["train"] = time.perf_counter() - mark

    mark = time.perf_counter()
    records = read_metrics(out / "run" / "metrics.jsonl")
    final_step = records[-1]["step"] if records else 0
    _predict(out / "run" / "student", out / "panoramas", out / "predictions",
             f"{cfg.student.architecture} after nano GoodSAM ({final_step} steps)", torch_device)
    timings["predict"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - start
    return {"timings": timings, "steps": final_step, "workers": workers,
            "first": records[0] if records else None, "last": records[-1] if records else None}


if __name__ == "__main__":  # a worker process of _launch
    sys.exit(_worker_main(sys.argv[1:]))
