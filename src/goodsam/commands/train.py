"""``goodsam train``: TA and student trained together on cached SAM masks (resumable, torchrun-ready)."""

from __future__ import annotations

from pathlib import Path

import typer


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
    from goodsam.train.distributed import current, shutdown  # deferred: torch
    from goodsam.train.pipeline import run_training

    try:
        result = run_training(config, data, masks, out, steps=steps, resume=resume or force_resume,
                              force_resume=force_resume, overrides=overrides, device=device,
                              progress=progress, val_images=val_images, val_labels=val_labels,
                              val_label_pattern=val_label_pattern, class_map=class_map, val_every=val_every)
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
