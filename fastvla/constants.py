"""Data keys and names shared by every FastVLA component.

Batches flowing between datasets, training, policies and evaluation are plain dicts keyed with
LeRobot's feature names, so a LeRobot dataset item, a training batch and a preprocessed Gymnasium
observation all look the same.
"""

from __future__ import annotations

# LeRobot feature keys.
OBS_PREFIX = "observation."
OBS_IMAGES = "observation.images"  # one key per camera: f"{OBS_IMAGES}.{camera}"
OBS_DEPTH = "observation.depth"  # one key per camera: f"{OBS_DEPTH}.{camera}" (FastVLA extension)
OBS_STATE = "observation.state"
ACTION = "action"
ACTION_IS_PAD = "action_is_pad"
# Training-only target (FastVLA extension): observation.state at the episode's last frame minus now.
AUX_GOAL = "aux_goal"
TASK = "task"
EPISODE_INDEX = "episode_index"
FRAME_INDEX = "frame_index"
TIMESTAMP = "timestamp"
INDEX = "index"
TASK_INDEX = "task_index"

# Gymnasium observation keys of the FastVLA envs.
GYM_PIXELS = "pixels"  # dict camera -> uint8 (H, W, 3)
GYM_DEPTH = "depth"  # dict camera -> float32 (H, W), metres
# Datasets store depth as uint16 millimetres (0 = no reading); see docs/datasets.md.
DEPTH_UNITS_PER_METRE = 1000
GYM_STATE = "agent_pos"  # float32 (n_joints + 1,)
INFO_TASK = "task"  # info["task"]: the language instruction of the episode
INFO_SUCCESS = "is_success"

# Module-name prefixes of FastVLA's freshly initialised modules: never quantised, always trained, and given
# the head learning rate (the model's NON_QUANTIZED_MODULES and the optimizer's head_modules).
FRESH_MODULES = (
    "projector",
    "fusion",
    "state_proj",
    "action_queries",
    "action_head",
    "vision.film_stages",
    "vision.film_out",
    "vision.camera_embedding",
    "vision.depth_embed",
    "keypoint_proj",
    "aux_goal_head",
)

# Files saved beside a trained policy.
DATASET_STATS_FILE = "dataset_stats.json"
POLICY_CONFIG_FILE = "policy_config.json"


def image_key(camera: str) -> str:
    """LeRobot feature key of a camera's RGB stream, e.g. ``observation.images.front``."""
    return f"{OBS_IMAGES}.{camera}"


def depth_key(camera: str) -> str:
    """Feature key of a camera's depth stream, e.g. ``observation.depth.front``."""
    return f"{OBS_DEPTH}.{camera}"


def camera_of(key: str) -> str:
    """Camera name of an image or depth feature key (``observation.images.front`` -> ``front``)."""
    for prefix in (OBS_IMAGES + ".", OBS_DEPTH + "."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    raise ValueError(f"{key!r} is not an image or depth feature key (expected '{OBS_IMAGES}.<camera>')")
