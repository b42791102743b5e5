"""The fused CPU loops of ``kernels.c`` used by the fast mask generator on CPU.

Built and loaded by :mod:`goodsam.native` (once per machine, cached in ``~/.cache/goodsam/kernels/``);
without a C compiler, or with ``GOODSAM_NATIVE=0``, :func:`kernels` returns None and callers use their
PyTorch path (same results up to float rounding, slower).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from torch import Tensor

from goodsam.native import NativeLibrary, ptr

__all__ = ["LIBRARY", "SOURCE", "kernels", "ptr", "usable"]

SOURCE = Path(__file__).with_name("kernels.c")
_p, _i, _i64, _f = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
SIGNATURES = {  # argument types of each function in kernels.c (all return void)
    "head_products": [_p, _p, _i64, _i, _i, _i, _p, _i, _i, _p, _i64, _p, _i64, _p],
    "softmax_heads": [_p, _i, _i, _i, _i],
    "online_softmax": [_p, _i, _i, _i, _p, _p, _p, _i, _p, _i64],
    "stability_counts": [_p, _i, _i, _i, _p, _p, _i, _i, _f, _f, _p, _p],
    "layer0_stats": [_p, _p, _p, _i64, _i, _i, _i, _p, _p, _f, _f, _p, _i64, _p, _i64, _i64, _i64, _p, _i64],
    "layer1_stats": [_p, _i64, _i64, _p, _p, _p, _i64, _p, _p, _p, _i64, _i, _i, _i,
                     _p, _p, _p, _p, _p, _p, _f, _f, _f],
    "hyper_masks": [_p, _p, _i, _i, _i, _i, _p, _i, _i, _i],
    "threshold_masks": [_p, _i, _i, _i, _p, _p, _i, _i, _f, _p, _p],
    "resize_cols": [_p, _i, _i, _i, _p, _p, _i, _i, _p],
    "up_norm": [_p, _p, _i64, _i, _i, _i, _i, _p, _p, _i64, _p, _p, _p, _p, _f, _i, _p],
}

LIBRARY = NativeLibrary(SOURCE, SIGNATURES)


def kernels() -> object | None:
    """The loaded library (built on first use), or None where it cannot be built."""
    return LIBRARY.get()


def usable(*tensors: Tensor) -> bool:
    """True if the kernels are available and every tensor is a CPU float32 tensor."""
    return LIBRARY.usable(*tensors)
