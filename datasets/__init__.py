"""LeRobot-format datasets: read v3.0 and v2.1, write v3.0, record demonstrations, load fast for training.

Example:
    >>> from fastvla.datasets import LeRobotDataset
    >>> ds = LeRobotDataset("path/to/dataset", delta_timestamps={"action": [0, 0.1]})  # doctest: +SKIP
"""

from fastvla.datasets.features import FrameValidationError
from fastvla.datasets.lerobot_dataset import LeRobotDataset, split_episodes
from fastvla.datasets.metadata import DatasetFormatError, DatasetMeta
from fastvla.datasets.training import TrainingDataset
from fastvla.datasets.video import VideoDecodeError
from fastvla.datasets.writer import LeRobotDatasetWriter

__all__ = [
    "DatasetFormatError",
    "DatasetMeta",
    "FrameValidationError",
    "LeRobotDataset",
    "LeRobotDatasetWriter",
    "TrainingDataset",
    "VideoDecodeError",
    "split_episodes",
]
