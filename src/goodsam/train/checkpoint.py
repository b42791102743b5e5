"""Checkpoints that survive a kill: safetensors weights + a small JSON state, written atomically.

Layout of a run folder::

    RUN_DIR/checkpoints/step_000100/ta.safetensors         TA weights
                                    student.safetensors    student weights
                                    state.safetensors      optimiser tensors (AdamW moments) + torch RNG
                                    state.json             step, config hash, optimiser hyper-parameters,
                                                           grad-scaler, numpy / python RNG (written last)
    RUN_DIR/checkpoints/latest                             name of the newest complete checkpoint
    RUN_DIR/student/  model.safetensors + goodsam_model.json   the exported student (what predict loads,
                                                               :mod:`goodsam.model_format`)

A checkpoint folder is filled under a temporary name and renamed into place
(:func:`goodsam.fileio.atomic_directory`), then ``latest`` is replaced atomically; a kill at any moment
leaves the previous checkpoint usable. Nothing is pickled: loading a checkpoint never executes code.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from goodsam.errors import GoodSAMError
from goodsam.fileio import atomic_directory, atomic_write_text, save_tensors
from goodsam.model_format import export_model as export_model  # re-exported: its old home
from goodsam.model_format import model_state

STATE_JSON = "state.json"


class CheckpointError(GoodSAMError):
    """A checkpoint is missing, damaged or belongs to another configuration."""


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} ({exc}); the checkpoint is damaged") from None


def _split_optimizer(name: str, state: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Move the tensors of an optimiser state dict into ``tensors``; return the JSON-able rest."""
    rest: dict = {"param_groups": state["param_groups"], "state": {}}
    for index, per_param in state["state"].items():
        entry = {}
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{index}.{key}"] = value
                entry[key] = {"tensor": f"optim.{name}.{index}.{key}"}
            else:
                entry[key] = value
        rest["state"][str(index)] = entry
    return rest


def _join_optimizer(rest: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {}
    for index, per_param in rest["state"].items():
        state[int(index)] = {key: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value
                             else value for key, value in per_param.items()}
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """Python, numpy and torch (CPU + CUDA) RNG states, split into JSON and tensors."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    info = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {"kind": np_state[0], "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
    }
    keys = np.asarray(np_state[1], dtype=np.uint32).view(np.int32).copy()
    tensors["rng.numpy.keys"] = torch.from_numpy(keys)
    return info, tensors


def set_rng_state(info: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))
    keys = tensors["rng.numpy.keys"].numpy().view(np.uint32)
    np_info = info["numpy"]
    np.random.set_state((np_info["kind"], keys, np_info["pos"], np_info["has_gauss"],
                         np_info["cached_gaussian"]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights, optimiser states, scaler state, RNG and bookkeeping."""

    path: Path
    step: int
    config_hash: str
    ta: dict[str, torch.Tensor]
    student: dict[str, torch.Tensor]
    optimizers: dict[str, dict]
    scaler: dict | None
    rng_info: dict
    rng_tensors: dict[str, torch.Tensor]
    extra: dict
    ta_ema: dict[str, torch.Tensor] | None = None


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def save_checkpoint(run_dir: Path, step: int, config_hash: str, ta: torch.nn.Module, student: torch.nn.Module,
                    optimizers: dict[str, torch.optim.Optimizer], scaler_state: dict | None = None,
                    keep: int = 2, extra: dict | None = None, ta_ema: torch.nn.Module | None = None) -> Path:
    """Write checkpoint ``step`` atomically, point ``latest`` at it, keep the ``keep`` newest.

    ``ta_ema``: the moving-average TA of ``train.ta_ema`` runs (``ta_ema.safetensors``), if any."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / checkpoint_name(step)
    with atomic_directory(target) as tmp:
        save_tensors(tmp / "ta.safetensors", model_state(ta))
        save_tensors(tmp / "student.safetensors", model_state(student))
        if ta_ema is not None:
            save_tensors(tmp / "ta_ema.safetensors", model_state(ta_ema))
        tensors: dict[str, torch.Tensor] = {}
        optim_json = {name: _split_optimizer(name, opt.state_dict(), tensors)
                      for name, opt in optimizers.items()}
        rng_info, rng_tensors = rng_state()
        tensors.update(rng_tensors)
        save_tensors(tmp / "state.safetensors", tensors)
        state = {"step": step, "config_hash": config_hash, "optimizers": optim_json, "scaler": scaler_state,
                 "rng": rng_info, "extra": extra or {}}
        atomic_write_text(tmp / STATE_JSON, json.dumps(state))
    atomic_write_text(root / "latest", target.name + "\n")
    _prune(root, keep)
    return target


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in
               ("ta.safetensors", "student.safetensors", "state.safetensors", STATE_JSON))


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and _complete(p))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step_*"):  # leftovers of writes killed midway
        if not stale.name.endswith(f".{os.getpid()}.tmp"):
            shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (``latest`` first, else the highest complete step)."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if named.is_dir() and _complete(named):
            return named
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and _complete(p))
    return done[-1] if done else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path / STATE_JSON} ({exc}); the checkpoint is damaged") from None
    tensors = load_tensors(path / "state.safetensors")
    optimizers = {name: _join_optimizer(rest, tensors) for name, rest in state["optimizers"].items()}
    rng_tensors = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    ema_path = path / "ta_ema.safetensors"
    ta_ema = load_tensors(ema_path) if ema_path.is_file() else None
    return Checkpoint(path, int(state["step"]), state["config_hash"], load_tensors(path / "ta.safetensors"),
                      load_tensors(path / "student.safetensors"), optimizers, state.get("scaler"),
                      state["rng"], rng_tensors, state.get("extra", {}), ta_ema)
