"""The Trainer reads what its caller injects (``data=``): the training core needs no dataset format.

A synthetic, file-less :class:`~fastvla.training.data.TrainingData` trains the tiny preset and exports a
policy in a fresh process, and ``fastvla.datasets`` (the default LeRobot reader) is never imported there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DRIVER = """
import json, sys
from pathlib import Path

import torch

from fastvla.constants import ACTION, ACTION_IS_PAD, OBS_STATE, TASK, image_key
from fastvla.training import DataConfig, TrainConfig
from fastvla.training.data import DataSpec
from fastvla.training.loop import Trainer


class Samples(torch.utils.data.Dataset):
    def __init__(self, n, image_size, chunk):
        self.n, self.size, self.chunk = n, image_size, chunk

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        state = torch.rand(4, generator=g)
        return {
            image_key("front"): torch.randint(0, 255, (3, *self.size), dtype=torch.uint8, generator=g),
            OBS_STATE: state,
            ACTION: -state.expand(self.chunk, 4).clone(),
            ACTION_IS_PAD: torch.zeros(self.chunk, dtype=torch.bool),
            TASK: "reach",
        }


class SyntheticData:
    def __init__(self):
        self.calls = []

    def inspect(self, cfg, seed):
        self.calls.append("inspect")
        stats = {
            OBS_STATE: {"mean": [0.5] * 4, "std": [0.3] * 4},
            ACTION: {"min": [-1.0] * 4, "max": [0.0] * 4},
        }
        return DataSpec(Path("synthetic"), ["front"], 4, 4, 10, stats, [0, 1], [])

    def build(self, spec, cfg, episodes, train, cache_dir, image_size, progress=True):
        self.calls.append(("build", list(episodes), train, list(image_size)))
        return Samples(16, image_size, cfg.chunk_size)


data = SyntheticData()
cfg = TrainConfig(
    data=DataConfig(root="synthetic", image_size=32, num_workers=0, val_fraction=0),
    output_dir=sys.argv[1], steps=2, batch_size=4, log_every=1, save_every=0, val_every=0,
    progress=False, tensorboard=False,
)
policy_dir = Trainer(cfg, data=data).fit()
print("RESULT " + json.dumps({
    "calls": data.calls,
    "exported": (policy_dir / "config.json").is_file(),
    "side_modules": sorted(m for m in sys.modules if m.split(".")[:2] in (
        ["fastvla", "datasets"], ["fastvla", "envs"], ["fastvla", "eval"], ["fastvla", "policies"]
    )),
}))
"""


def test_trainer_trains_on_injected_data_without_the_side_folders(tmp_path: Path) -> None:
    (tmp_path / "driver.py").write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "run")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    assert result["calls"] == ["inspect", ["build", [0, 1], True, [32, 32]]]
    assert result["exported"]
    assert result["side_modules"] == []  # nothing but the injected data: no LeRobot reader, envs or eval
