"""SIGKILL during recording: completed episodes survive, the partial one is dropped, the dataset opens."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastvla.datasets import LeRobotDataset, LeRobotDatasetWriter
from fastvla.datasets.video import video_info

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from fastvla.datasets import LeRobotDatasetWriter
    from fastvla.datasets import writer as writer_module

    root, mode = sys.argv[1], sys.argv[2]
    feats = {
        "observation.images.front": {"dtype": "video", "shape": (32, 32, 3)},
        "observation.state": {"dtype": "float32", "shape": (2,)},
        "action": {"dtype": "float32", "shape": (2,)},
    }
    w = LeRobotDatasetWriter(root, fps=10, features=feats)
    if mode == "during_commit":
        # die after the data and video files took the third episode, before its metadata is written
        original = writer_module.LeRobotDatasetWriter._write_episodes_file
        def dying(self, chunk, file):
            if self.num_episodes == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, chunk, file)
        writer_module.LeRobotDatasetWriter._write_episodes_file = dying
    ep = 0
    while True:
        for t in range(10):
            img = np.full((32, 32, 3), 20 * ep + t, np.uint8)
            v = np.array([ep, t], np.float32)
            w.add_frame({"observation.images.front": img, "observation.state": v, "action": -v}, task="t")
            if mode == "mid_episode" and ep == 2 and t == 5:
                print("partial", flush=True)
                signal.pause()
        w.save_episode()
        print("saved", ep, flush=True)
        ep += 1
    """
)


def _run_child(tmp_path, mode):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(root), mode], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    if mode == "mid_episode":
        deadline = time.time() + 60
        for line in proc.stdout:
            if line.startswith("partial") or time.time() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return root


def _check(root, episodes):
    ds = LeRobotDataset(root)
    assert ds.num_episodes == episodes and len(ds) == 10 * episodes
    for idx in range(0, len(ds), 3):
        item = ds[idx]
        ep, t = int(item["episode_index"]), int(item["frame_index"])
        assert item["observation.state"].tolist() == [ep, t]
        assert abs(float(item["observation.images.front"].mean()) * 255 - (20 * ep + t)) < 2.0


@pytest.mark.parametrize("mode", ["mid_episode", "during_commit"])
def test_sigkill_keeps_completed_episodes(tmp_path, mode):
    root = _run_child(tmp_path, mode)
    _check(root, 2)  # episodes 0 and 1; never the interrupted third
    # Re-opening for append trims the leftovers, and recording continues seamlessly.
    saved = LeRobotDataset(root).num_episodes
    writer = LeRobotDatasetWriter(root)
    assert not (root / ".staging").exists()
    assert video_info(root / "videos/observation.images.front/chunk-000/file-000.mp4")["frames"] == 10 * saved
    for t in range(10):
        v = np.array([saved, t], np.float32)
        img = np.full((32, 32, 3), 20 * saved + t, np.uint8)
        writer.add_frame({"observation.images.front": img, "observation.state": v, "action": -v}, task="t")
    writer.save_episode()
    writer.finalize()
    _check(root, saved + 1)
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == saved + 1


def test_sigkill_then_verify_and_repair(tmp_path):
    from fastvla.datasets.recovery import repair
    from fastvla.datasets.verify import verify

    root = _run_child(tmp_path, "during_commit")
    report = verify(root)  # the third episode's rows and frames are on disk but not committed
    assert not report.ok and any("repair" in p for p in report.problems), report.problems
    actions = repair(root)  # no append needed
    assert any("uncommitted rows" in a for a in actions) and any("trimmed" in a for a in actions), actions
    assert verify(root).ok, verify(root).problems
    info = json.loads((root / "meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (2, 20)
    _check(root, 2)
