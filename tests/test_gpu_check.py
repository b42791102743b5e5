"""scripts/gpu_check.sh --cpu-smoke: every GPU check at toy sizes on the CPU (so the script cannot rot)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("sam", "train", "fusion", "eval", "predict", "inference")


@pytest.mark.slow
def test_gpu_check_cpu_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--work",
                             str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout.split("| check | result |")[1]
    for check in CHECKS:
        assert f"| {check} | ok |" in table, result.stdout[-3000:]
    assert "FAIL" not in table


def test_gpu_check_fails_without_cuda_unless_smoke(tmp_path: Path) -> None:
    """Without --cpu-smoke on a machine without CUDA the script must say so and fail, not pass."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--work", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 1
    assert "no CUDA device" in result.stderr
