"""LeRobot-format datasets: read v3.0 and v2.1, write v3.0, record demonstrations, load fast for training.

Example:
    >>> from fastvla.datasets import LeRobotDataset
    >>> ds = LeRobotDataset("path/to/dataset", delta_timestamps={"action": [0, 0.1]})  # doctest: +SKIP

Names are imported lazily so that ``fastvla --help`` (which imports the CLI modules of this package)
does not pay for torch, PyAV and pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DatasetFormatError": "fastvla.datasets.metadata",
    "DatasetMeta": "fastvla.datasets.metadata",
    "FrameValidationError": "fastvla.datasets.features",
    "LeRobotDataset": "fastvla.datasets.lerobot_dataset",
    "LeRobotDatasetWriter": "fastvla.datasets.writer",
    "RecordSummary": "fastvla.datasets.recorder",
    "TrainingDataset": "fastvla.datasets.training",
    "VideoDecodeError": "fastvla.datasets.video",
    "convert_v21_to_v30": "fastvla.datasets.convert",
    "record": "fastvla.datasets.recorder",
    "split_episodes": "fastvla.datasets.lerobot_dataset",
}

if TYPE_CHECKING:
    from fastvla.datasets.convert import convert_v21_to_v30
    from fastvla.datasets.features import FrameValidationError
    from fastvla.datasets.lerobot_dataset import LeRobotDataset, split_episodes
    from fastvla.datasets.metadata import DatasetFormatError, DatasetMeta
    from fastvla.datasets.recorder import RecordSummary, record
    from fastvla.datasets.training import TrainingDataset
    from fastvla.datasets.video import VideoDecodeError
    from fastvla.datasets.writer import LeRobotDatasetWriter


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastvla.datasets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DatasetFormatError",
    "DatasetMeta",
    "FrameValidationError",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "RecordSummary",
    "TrainingDataset",
    "VideoDecodeError",
    "convert_v21_to_v30",
    "record",
    "split_episodes",
]
