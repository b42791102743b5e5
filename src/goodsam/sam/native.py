"""Builds and loads the fused CPU loops of ``kernels.c`` (used by the fast mask generator on CPU).

The C file is compiled once per machine with the system C compiler (``cc -O3 -march=native``) into
``~/.cache/goodsam/kernels/`` (named by a hash of the source, the compiler flags and the CPU) and
loaded with ctypes: no PyTorch headers, so a build takes a second or two. Without a C compiler, or with
``GOODSAM_NATIVE=0``, :func:`kernels` returns None and callers use their PyTorch path (same results
up to float rounding, slower).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import torch
from torch import Tensor

from goodsam.assets import user_cache_dir
from goodsam.fileio import atomic_path

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-std=c11")

_lock = threading.Lock()
_loaded: dict[str, object] = {}


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler")
    with atomic_path(target) as out:  # concurrent builders never see a half-written library
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(out), "-lm"], check=True,
                       capture_output=True, timeout=300)


def _cpu_fingerprint() -> bytes:
    """What ``-march=native`` depends on: the machine type and, on Linux, the CPU's feature flags (so
    a cache shared between different CPUs never loads a library built for another one)."""
    info = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info += next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        info += platform.processor()
    return info.encode()


def _load() -> object | None:
    if os.environ.get("GOODSAM_NATIVE", "1") == "0":
        return None
    try:
        key = SOURCE.read_bytes() + " ".join(FLAGS).encode() + _cpu_fingerprint()
        digest = hashlib.sha256(key).hexdigest()[:16]
        target = user_cache_dir() / "kernels" / f"goodsam_kernels_{digest}.so"
        if not target.exists():
            _build(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    p, i, i64, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    signatures = {  # argument types of each function in kernels.c (all return void)
        "head_products": [p, p, i64, i, i, i, p, i, i, p, i64, p, i64, p],
        "softmax_heads": [p, i, i, i, i],
        "online_softmax": [p, i, i, i, p, p, p, i, p, i64],
        "stability_counts": [p, i, i, i, p, p, i, i, f, f, p, p],
        "layer0_stats": [p, p, p, i64, i, i, i, p, p, f, f, p, i64, p, i64, i64, i64, p, i64],
        "layer1_stats": [p, i64, i64, p, p, p, i64, p, p, p, i64, i, i, i, p, p, p, p, p, p, f, f, f],
        "unshuffle_masks": [p, i, i, i, i, p, i, i, i],
        "threshold_masks": [p, i, i, i, p, p, i, i, f, p, p],
        "resize_cols": [p, i, i, i, p, p, i, i, p],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib


def kernels() -> object | None:
    """The loaded library (built on first use), or None where it cannot be built."""
    with _lock:
        if "lib" not in _loaded:
            _loaded["lib"] = _load()
        return _loaded["lib"]


def usable(*tensors: Tensor) -> bool:
    """True if the kernels are available and every tensor is a CPU float32 tensor."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and kernels() is not None


def ptr(t: Tensor | None) -> int | None:
    """Data pointer of ``t`` (None for None)."""
    return None if t is None else t.data_ptr()
