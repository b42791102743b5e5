"""Builds and loads goodsam's fused CPU loops: small C files compiled once per machine.

Each C file is compiled with the system C compiler (``cc -O3 -march=native``) into
``~/.cache/goodsam/kernels/`` (named by the file's stem and a hash of its source, the compiler flags and
the CPU) and loaded with ctypes: no PyTorch headers, so a build takes a second or two. Without a C
compiler, or with ``GOODSAM_NATIVE=0``, :meth:`NativeLibrary.get` returns None and callers use their
PyTorch path (same results up to float rounding, slower). Users: the fast mask generator
(``goodsam/sam/kernels.c``) and ESPNetv2's training backward (``goodsam/segmenters/nn_kernels.c``).
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

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC", "-std=c11")
NATIVE_ENV = "GOODSAM_NATIVE"


def _build(source: Path, target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise OSError("no C compiler")
    with atomic_path(target) as out:  # concurrent builders never see a half-written library
        subprocess.run([compiler, *FLAGS, str(source), "-o", str(out), "-lm"], check=True,
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


def build_and_load(source: Path, signatures: dict[str, list]) -> ctypes.CDLL | None:
    """The library of ``source`` (built on first use) with each function's argument types set (all
    return void), or None where ``GOODSAM_NATIVE=0`` or it cannot be built."""
    if os.environ.get(NATIVE_ENV, "1") == "0":
        return None
    try:
        key = source.read_bytes() + " ".join(FLAGS).encode() + _cpu_fingerprint()
        digest = hashlib.sha256(key).hexdigest()[:16]
        target = user_cache_dir() / "kernels" / f"goodsam_{source.stem}_{digest}.so"
        if not target.exists():
            _build(source, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, None
    return lib


class NativeLibrary:
    """One C file of fused loops, built and loaded on first use (thread-safe), then kept."""

    def __init__(self, source: Path, signatures: dict[str, list]) -> None:
        self.source = source
        self.signatures = signatures
        self.loaded: dict[str, ctypes.CDLL | None] = {}  # "lib" once tried (None: unavailable)
        self._lock = threading.Lock()

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, or None where it cannot be built (see :func:`build_and_load`)."""
        with self._lock:
            if "lib" not in self.loaded:
                self.loaded["lib"] = build_and_load(self.source, self.signatures)
            return self.loaded["lib"]

    def usable(self, *tensors: Tensor) -> bool:
        """True if the library is available and every tensor is a CPU float32 tensor."""
        return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
                and self.get() is not None)


def ptr(t: Tensor | None) -> int | None:
    """Data pointer of ``t`` (None for None)."""
    return None if t is None else t.data_ptr()
