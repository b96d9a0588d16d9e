"""Run this folder's CPU kernel cases in a child pytest with ``TRITON_INTERPRET=1`` (see conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import INTERPRETED

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.mark.skipif(INTERPRETED, reason="already interpreted: the cases run in this process")
def test_kernels_under_triton_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-P", "-m", "pytest", str(HERE), "-q", "-m", "not gpu", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"interpreted kernel tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    )
    assert " passed" in proc.stdout and " failed" not in proc.stdout, proc.stdout[-2000:]
