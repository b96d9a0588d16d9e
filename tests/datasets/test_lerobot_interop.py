"""Datasets we write, read by lerobot's own ``LeRobotDataset`` (optional; needs a separate venv).

lerobot pins torch/python versions this venv doesn't have, so this runs only when ``FASTVLA_LEROBOT_PYTHON``
names a Python with ``lerobot-dataset==0.4.4`` (lerobot 0.4.4's v3.0 dataset code, packaged standalone)::

    python3.11 -m venv /tmp/lrvenv && /tmp/lrvenv/bin/pip install torch==2.13.0 lerobot-dataset==0.4.4
    FASTVLA_LEROBOT_PYTHON=/tmp/lrvenv/bin/python pytest tests/datasets/test_lerobot_interop.py

Values (lengths, tasks, state/action windows and pad masks, timestamps, camera means, stats) must agree
with our reader exactly (camera means within 1e-6: both decode the same bitstream).
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from fastvla.datasets import LeRobotDataset, LeRobotDatasetWriter
from fastvla.datasets.convert import convert_v21_to_v30

LEROBOT_PYTHON = os.environ.get("FASTVLA_LEROBOT_PYTHON")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not LEROBOT_PYTHON, reason="set FASTVLA_LEROBOT_PYTHON to a python with lerobot-dataset"
    ),
]

LEROBOT_READER = """\
'''Read a dataset with lerobot's own LeRobotDataset (ledataset 0.4.4, lerobot 0.4.4's code).

torchvision can't be installed beside torch 2.13 here, so it is stubbed and the pyav backend's frame
decoding is re-implemented with PyAV the way lerobot's torchvision path does it (seek to the keyframe
before the first timestamp, decode until the last, nearest frame within tolerance). Everything else
(metadata, parquet loading through HF datasets, timestamps sync checks, delta indices, padding) is lerobot's.
'''
import sys, types, json

class _Dummy:
    def __init__(self, *a, **k): pass
fake = types.ModuleType("torchvision")
tr = types.ModuleType("torchvision.transforms")
v2 = types.ModuleType("torchvision.transforms.v2")
v2.__getattr__ = lambda name: (_ for _ in ()).throw(AttributeError(name)) if name.startswith("__") else _Dummy
fake.transforms = tr; tr.v2 = v2
import importlib.machinery
for _m in (fake, tr, v2):
    _m.__spec__ = importlib.machinery.ModuleSpec(_m.__name__, None)
fake.__version__ = "0.0"

class _ToTensor:  # torchvision.transforms.ToTensor: PIL (H, W, C) uint8 -> float (C, H, W) in [0, 1]
    def __call__(self, pic):
        import numpy as _np, torch as _t
        return _t.from_numpy(_np.asarray(pic).copy()).permute(2, 0, 1).float() / 255
tr.ToTensor = _ToTensor
sys.modules.update({"torchvision": fake, "torchvision.transforms": tr, "torchvision.transforms.v2": v2})

import av, numpy as np, torch
from ledataset.datasets import video_utils

def decode_pyav(video_path, timestamps, tolerance_s, backend="pyav", log_loaded_timestamps=False):
    first, last = min(timestamps), max(timestamps)
    with av.open(str(video_path)) as c:
        s = c.streams.video[0]
        c.seek(int(first / s.time_base), stream=s, backward=True, any_frame=False)
        frames, ts = [], []
        for f in c.decode(s):
            frames.append(torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)); ts.append(f.time)
            if f.time >= last:
                break
    q, l = torch.tensor(timestamps), torch.tensor(ts)
    dist = torch.cdist(q[:, None], l[:, None], p=1)
    min_, argmin_ = dist.min(1)
    assert (min_ < tolerance_s).all(), f"timestamps {q[min_ >= tolerance_s]} outside tolerance {tolerance_s}"
    return torch.stack([frames[i] for i in argmin_]).type(torch.float32) / 255

video_utils.decode_video_frames_torchvision = decode_pyav

from ledataset.datasets.lerobot_dataset import LeRobotDataset

root = sys.argv[1]
ds = LeRobotDataset("local/test", root=root, video_backend="pyav", delta_timestamps={"action": [0, 0.1, 0.2]})
out = {"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "tasks": list(ds.meta.tasks.index)}
out["items"] = {}
for idx in sorted({0, len(ds) // 2, len(ds) - 1, 5}):
    it = ds[idx]
    row = {}
    for k, v in it.items():
        if isinstance(v, torch.Tensor) and v.ndim == 3:
            row[k] = v.mean(dim=(1, 2)).tolist()
        elif isinstance(v, torch.Tensor):
            row[k] = v.tolist()
        else:
            row[k] = v
    out["items"][idx] = row
out["stats_action_mean"] = np.asarray(ds.meta.stats["action"]["mean"]).tolist()
print("RESULT " + json.dumps(out))
"""


def _write(root, codec, wrist_dtype, lengths, **kwargs):
    feats = {
        "observation.images.front": {"dtype": "video", "shape": (32, 48, 3)},
        "observation.images.wrist": {"dtype": wrist_dtype, "shape": (32, 48, 3)},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": list("abcd")},
        "action": {"dtype": "float32", "shape": (4,), "names": list("abcd")},
    }
    rng = np.random.default_rng(0)
    with LeRobotDatasetWriter(root, fps=10, features=feats, codec=codec, **kwargs) as writer:
        for e, n in enumerate(lengths):
            for t in range(n):
                img = np.zeros((32, 48, 3), np.uint8)
                img[:] = (20 + 10 * e + 3 * t, 90, 150)
                img[5:15, t : t + 10] = 240
                s = rng.standard_normal(4).astype(np.float32)
                frame = {"observation.images.front": img, "observation.images.wrist": img[:, ::-1].copy()}
                writer.add_frame({**frame, "observation.state": s, "action": -s}, task=f"task {e % 2}")
            writer.save_episode()
    return root


def _ours(root):
    ds = LeRobotDataset(root, delta_timestamps={"action": [0, 0.1, 0.2]})
    out = {
        "len": len(ds),
        "episodes": ds.num_episodes,
        "fps": ds.fps,
        "tasks": list(ds.meta.tasks),
        "items": {},
    }
    for idx in sorted({0, len(ds) // 2, len(ds) - 1, 5}):
        row = {}
        for k, v in ds[idx].items():
            if isinstance(v, torch.Tensor):
                row[k] = v.mean(dim=(1, 2)).tolist() if v.ndim == 3 else v.tolist()
            else:
                row[k] = v
        out["items"][str(idx)] = row
    out["stats_action_mean"] = np.asarray(ds.meta.stats["action"]["mean"]).tolist()
    return out


def _theirs(root, tmp_path):
    script = tmp_path / "lerobot_read.py"
    script.write_text(LEROBOT_READER)
    proc = subprocess.run(
        [LEROBOT_PYTHON, str(script), str(root)], capture_output=True, text=True, cwd=tmp_path
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"lerobot failed to read {root}:\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("case", ["h264_png_append", "av1", "rollover", "converted_v21"])
def test_lerobot_reads_what_we_write(case, tmp_path, lerobot_fixtures):
    root = tmp_path / case
    if case == "h264_png_append":
        _write(root, "h264", "image", (12, 9))
        _write(root, "h264", "image", (7,))  # reopen and append
    elif case == "av1":
        _write(root, "av1", "video", (12, 9, 15))
    elif case == "rollover":
        sizes = {"data_files_size_in_mb": 1e-6, "video_files_size_in_mb": 1e-6, "chunks_size": 2}
        _write(root, "h264", "video", (5, 6, 7, 8), **sizes)
    else:
        convert_v21_to_v30(lerobot_fixtures / "sim_2cam_video_v21", root, progress=False)
    theirs, ours = _theirs(root, tmp_path), _ours(root)
    for key in ("len", "episodes", "fps", "tasks"):
        assert theirs[key] == ours[key], key
    for idx, row in theirs["items"].items():
        assert set(row) == set(ours["items"][idx])
        for key, value in row.items():
            mine = ours["items"][idx][key]
            if key.startswith("observation.images"):
                np.testing.assert_allclose(mine, value, atol=1e-6)
            elif key == "timestamp":
                assert abs(mine - value) <= 1e-6
            else:
                assert mine == value, (idx, key)
    np.testing.assert_allclose(ours["stats_action_mean"], theirs["stats_action_mean"], rtol=1e-12)


def test_lerobot_reads_depth_maps(tmp_path):
    """Depth as fastvla records it (uint16 mm, (H, W), stored as datasets.Array2D) reads back in lerobot."""
    root = tmp_path / "depth"
    feats = {
        "observation.images.front": {"dtype": "video", "shape": (32, 48, 3)},
        "observation.depth.front": {"dtype": "uint16", "shape": (32, 48), "names": ["height", "width"]},
        "observation.state": {"dtype": "float32", "shape": (4,), "names": list("abcd")},
        "action": {"dtype": "float32", "shape": (4,), "names": list("abcd")},
    }
    with LeRobotDatasetWriter(root, fps=10, features=feats) as writer:
        for e, n in enumerate((8, 6)):
            for t in range(n):
                depth = (500 + 100 * e + 7 * t + np.arange(32 * 48).reshape(32, 48)).astype(np.uint16)
                s = np.full(4, e + 0.1 * t, np.float32)
                frame = {"observation.images.front": np.full((32, 48, 3), 40 + 9 * t, np.uint8)}
                frame |= {"observation.depth.front": depth, "observation.state": s, "action": -s}
                writer.add_frame(frame, task="reach")
            writer.save_episode()
    theirs, ours = _theirs(root, tmp_path), _ours(root)
    assert theirs["len"] == ours["len"] == 14
    for idx, row in theirs["items"].items():
        depth = np.asarray(row["observation.depth.front"])
        assert depth.shape == (32, 48)
        np.testing.assert_array_equal(depth, ours["items"][idx]["observation.depth.front"])
