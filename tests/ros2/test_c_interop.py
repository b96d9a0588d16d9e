"""Interop with Cyclone DDS's C library as ROS 2 uses it (Debian's libddsc 0.10, the series of Humble/Jazzy).

``c_peer/ros_peer.c`` plays a ROS 2 node on ``rmw_cyclonedds_cpp``: ROS 2's IDL compiled with ``idlc -t``
(no XTypes type information, so endpoints match by type name, as rmw_cyclonedds does), XCDR1, ROS 2 topic
names and QoS. It and ``py_peer.py`` (our transport) exchange JointState, Image, Float64MultiArray and
String inside a private network namespace. Needs ``apt-get install cyclonedds-dev cyclonedds-tools`` and
gcc; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cyclonedds")

from fastvla.ros2.dds import loopback_config
from fastvla.ros2.demo import netns_available

HERE = Path(__file__).parent
pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("idlc") and shutil.which("gcc") and Path("/usr/include/dds/dds.h").exists()),
        reason="needs Cyclone DDS C headers/idlc (apt-get install cyclonedds-dev cyclonedds-tools) and gcc",
    ),
    pytest.mark.skipif(not netns_available(), reason="needs `unshare -rn` (private network namespace)"),
]


def test_c_cyclone_peer_without_type_info_exchanges_ros2_messages(tmp_path: Path) -> None:
    subprocess.run(["idlc", "-t", "-o", str(tmp_path), str(HERE / "c_peer" / "ros_types.idl")], check=True)
    peer = tmp_path / "ros_peer"
    subprocess.run(
        ["gcc", "-O1", "-o", str(peer), str(HERE / "c_peer" / "ros_peer.c"), str(tmp_path / "ros_types.c"),
         "-I", str(tmp_path), "-lddsc"],
        check=True,
    )  # fmt: skip
    config = tmp_path / "loopback.xml"
    config.write_text(loopback_config())
    c_out = tmp_path / "c.out"
    domain = str(100 + os.getpid() % 100)
    script = 'ip link set lo up || exit 1; "$0" "$2" > "$3" 2>&1 & "$1" "$4" "$2"; wait'
    proc = subprocess.run(
        [
            "unshare",
            "-rn",
            "sh",
            "-c",
            script,
            str(peer),
            sys.executable,
            domain,
            str(c_out),
            str(HERE / "py_peer.py"),
        ],
        env=dict(os.environ, CYCLONEDDS_URI=f"file://{config}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    c_text = c_out.read_text()
    assert proc.returncode == 0, (proc.stderr, c_text)
    py = json.loads(proc.stdout.strip().splitlines()[-1])
    # C -> Python: commands and instruction decoded by fastvla.ros2.msgs
    assert py["commands"] == [[1.0, 2.0, 3.0]]
    assert py["instructions"] == ["open the drawer"]
    # Python -> C: Cyclone's own (0.10) deserializer reads our CDR bytes field for field
    assert "JS names=2 first=a pos=0.5,-1.25 stamp=12.345 frame=base" in c_text, c_text
    assert f"IMG 4x3 rgb8 step=12 bytes=36 sum={py['image_sum']}" in c_text, c_text
    assert "DONE js=1 img=1" in c_text
