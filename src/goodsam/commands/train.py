"""``goodsam train``: TA and student trained together on cached SAM masks (resumable, torchrun-ready)."""

from __future__ import annotations

from pathlib import Path

import typer

from goodsam.errors import ConfigError


def run_train(config: str, data: Path, masks: Path, out: Path, *, steps: int | None = None,
              resume: bool = False, force_resume: bool = False, overrides: list[str] | tuple[str, ...] = (),
              device: str = "auto", progress: bool = True, tensorboard: bool = True,
              val_images: Path | None = None, val_labels: Path | None = None,
              val_label_pattern: str = "{stem}.png", class_map: str = "cityscapes19", val_every: int = 50):
    """Library form of the command: masks first (missing ones only), then training; returns the result.

    ``val_images``/``val_labels``: a labelled set scored every ``val_every`` steps (student and TA)."""
    from goodsam.devices import auto_device
    from goodsam.train.config import load_config
    from goodsam.train.data import ensure_masks
    from goodsam.train.distributed import barrier, init_distributed
    from goodsam.train.trainer import train
    from goodsam.train.validation import Validation

    if (val_images is None) != (val_labels is None):
        raise ConfigError("give both --val-images and --val-labels, or neither")
    validation = None
    if val_images is not None:
        validation = Validation.from_folders(val_images, val_labels, val_label_pattern, class_map, val_every)
    info = init_distributed()
    cfg = load_config(config, list(overrides))
    if steps is not None:
        if steps < 0:
            raise ConfigError(f"--steps must be >= 0, got {steps}")
        cfg.train.steps = steps
    torch_device = auto_device(device, info.local_rank)
    ensure_masks(cfg, data, masks, device=str(torch_device), rank=info.rank, world_size=info.world_size,
                 progress=progress and info.is_main)
    barrier()
    return train(cfg, data, masks, out, device=str(torch_device), resume=resume, force_resume=force_resume,
                 progress=progress, tensorboard=tensorboard, validation=validation)


def train_command(
    config: str = typer.Option(..., "--config", help="Bundled setup (nano-s0.5, nano-s1.0, goodsam-t|s|m) "
                                                     "or a YAML path."),
    data: Path = typer.Option(..., "--data", help="Folder of training panoramas (unlabelled)."),
    masks: Path = typer.Option(..., "--masks", help="SAM mask cache (computed here for images without one)."),
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, logs, exported student."),
    steps: int | None = typer.Option(None, "--steps", help="Train until this many steps (default: config)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (last checkpoint)."),
    force_resume: bool = typer.Option(False, "--force-resume", help="Resume even if the config changed."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. "
                                                          "--set optim.student.lr=1e-4 (repeatable)."),
    device: str = typer.Option("auto", help="auto (CUDA if available), cpu, cuda, cuda:1 …"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    val_images: Path | None = typer.Option(None, "--val-images", help="Labelled validation images, scored "
                                                                      "every --val-every steps."),
    val_labels: Path | None = typer.Option(None, "--val-labels", help="Their label folder."),
    val_label_pattern: str = typer.Option("{stem}.png", "--val-label-pattern",
                                          help="Label file name of image <stem>, e.g. "
                                               "'{stem}_trainIds.png'."),
    class_map: str = typer.Option("cityscapes19", "--class-map", help="Class map of the validation labels."),
    val_every: int = typer.Option(50, "--val-every", min=1, help="Validate every this many steps."),
) -> None:
    """Train a student (and adapt the TA) without labels: GoodSAM's DAR + MKA losses on cached SAM masks.

    Multi-GPU / multi-node: launch with `torchrun --nproc_per_node=G -m goodsam.cli train …`.
    """
    from goodsam.train.distributed import current, shutdown

    try:
        result = run_train(config, data, masks, out, steps=steps, resume=resume or force_resume,
                           force_resume=force_resume, overrides=overrides, device=device, progress=progress,
                           val_images=val_images, val_labels=val_labels, val_label_pattern=val_label_pattern,
                           class_map=class_map, val_every=val_every)
        if current().is_main:
            last = result.history[-1] if result.history else None
            line = f"trained to step {result.step} in {result.seconds:.0f} s"
            if last:
                line += f" (last losses: student {last['student']:.4f}, TA {last['ta']:.4f})"
            typer.echo(line)
            typer.echo(f"student: {result.student_dir}  "
                       f"(goodsam predict {result.student_dir} IMAGES --out DIR)")
    finally:
        shutdown()


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
