"""Run ROS 2 processes from the PyPI ROS venvs inside a private network namespace (tests, benchmark).

``scripts/ros_venv.sh jazzy|kilted`` builds ``.venv-ros-<distro>`` (rclpy + Fast DDS from PyPI). The
processes run under ``unshare -rn`` with multicast on the namespace's own ``lo``, so Fast DDS discovers
peers with its default multicast settings and nothing can leave the namespace. FastVLA code runs there
from the source tree (``PYTHONPATH``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DISTROS = ("jazzy", "kilted")
NETNS_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"


def ros_venv(distro: str) -> Path:
    """``.venv-ros-<distro>`` in the repo root (may not exist yet)."""
    if distro not in DISTROS:
        raise ValueError(f"distro {distro!r} unknown; choose one of {DISTROS}")
    return REPO / f".venv-ros-{distro}"


def ros_venv_missing(distro: str) -> str | None:
    """Why the ROS venv of ``distro`` can't be used, or ``None`` when it can."""
    venv = ros_venv(distro)
    if not (venv / ".ros-installed").exists():
        return f"no ROS 2 {distro} venv at {venv}: run `bash scripts/ros_venv.sh {distro}` (make test does)"
    return None


@functools.lru_cache(maxsize=1)
def netns_unavailable() -> str | None:
    """Why a private network namespace with multicast on ``lo`` can't be made here, or ``None``."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return "needs `unshare` and `ip` (util-linux, iproute2) for a private network namespace"
    proc = subprocess.run(["unshare", "-rn", "sh", "-c", NETNS_SETUP], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"`unshare -rn` with multicast on lo failed here: {proc.stderr.strip() or proc.returncode}"
    return None


def ros_env(distro: str, domain_id: int) -> dict[str, str]:
    """Environment for a ROS process: its venv first on PATH, the repo on PYTHONPATH, a private log dir."""
    venv = ros_venv(distro)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROS_", "RMW_", "AMENT_", "CYCLONEDDS"))}
    env.update(
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        ROS_DOMAIN_ID=str(domain_id),
        ROS_LOG_DIR=str(Path(os.environ.get("TMPDIR", "/tmp")) / "fastvla-roslog"),
        OMP_NUM_THREADS="1",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def run_in_netns(script: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the bash ``script`` in a fresh private network namespace (``python`` = the venv's)."""
    return subprocess.run(
        # a newline, not "&&": "setup && cmd &" would background the whole list, not just cmd
        ["unshare", "-rn", "bash", "-c", f"{NETNS_SETUP} || exit 97\n{script}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
