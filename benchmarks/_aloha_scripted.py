"""gym-aloha transfer-cube with ACT's scripted policy: end-effector waypoints, then a joint-space replay.

gym-aloha ships the tasks but no scripted policy. ACT (Zhao et al. 2023), whose simulation gym-aloha
packages, made its demonstrations in two passes: ``PickAndTransferPolicy`` drives the two grippers through
mocap waypoints in the end-effector twin of the task, the joint positions it passes through are recorded
(with the commanded gripper openings), and that joint trajectory is replayed as actions in the joint-space
task, which scores it. This module does the same with gym-aloha's own task classes, model files and reward
(success = reward 4: the left gripper holds the cube off the table), for the same box pose as
``gym.make("gym_aloha/AlohaTransferCube-v0").reset(seed=s)`` (``sample_box_pose(s)``). The task classes
render three 480x640 cameras on every observation (~7 steps/s on a CPU); the subclasses here skip the
images, which the scripted policy does not use.
"""

from __future__ import annotations

import collections
import itertools
from typing import Any

import numpy as np

EE_STEPS = 400  # ACT's episode length for the scripted transfer
MAX_STEPS = 300  # gym-aloha's max_episode_steps for AlohaTransferCube-v0
SUCCESS_REWARD = 4


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (w, x, y, z) quaternions."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _axis_quat(axis: list[float], degrees: float) -> np.ndarray:
    half = np.radians(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * np.asarray(axis, dtype=np.float64)])


def waypoints(left0: np.ndarray, right0: np.ndarray, box_xyz: np.ndarray) -> tuple[list, list]:
    """ACT's ``PickAndTransferPolicy`` waypoints ``(t, xyz, quat, gripper)`` (gripper 1 = open)."""
    pick = _quat_mul(right0[3:], _axis_quat([0.0, 1.0, 0.0], -60))
    meet_left = _axis_quat([1.0, 0.0, 0.0], 90)
    meet = np.array([0.0, 0.5, 0.25])
    ident = np.array([1.0, 0.0, 0.0, 0.0])
    left = [
        (0, left0[:3], left0[3:], 0),
        (100, meet + np.array([-0.1, 0, -0.02]), meet_left, 1),  # approach the meeting point
        (260, meet + np.array([0.02, 0, -0.02]), meet_left, 1),
        (310, meet + np.array([0.02, 0, -0.02]), meet_left, 0),  # close the left gripper
        (360, meet + np.array([-0.1, 0, -0.02]), ident, 0),
        (400, meet + np.array([-0.1, 0, -0.02]), ident, 0),
    ]
    right = [
        (0, right0[:3], right0[3:], 0),
        (90, box_xyz + np.array([0, 0, 0.08]), pick, 1),  # above the cube
        (130, box_xyz + np.array([0, 0, -0.015]), pick, 1),  # down
        (170, box_xyz + np.array([0, 0, -0.015]), pick, 0),  # close
        (200, meet + np.array([0.05, 0, 0]), pick, 0),  # to the meeting point
        (220, meet, pick, 0),
        (310, meet, pick, 1),  # open: hand over
        (360, meet + np.array([0.1, 0, 0]), pick, 1),
        (400, meet + np.array([0.1, 0, 0]), pick, 1),
    ]
    return left, right


def _interpolate(points: list, t: int) -> np.ndarray:
    """Linear interpolation of xyz, quaternion and gripper between the waypoints around step ``t``."""
    for (t0, xyz0, q0, g0), (t1, xyz1, q1, g1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            f = (t - t0) / (t1 - t0)
            start = np.concatenate([xyz0, q0, [g0]]).astype(np.float64)
            end = np.concatenate([xyz1, q1, [g1]]).astype(np.float64)
            return (1 - f) * start + f * end
    _, xyz, q, g = points[-1]
    return np.concatenate([xyz, q, [g]])


def _tasks() -> tuple[type, type]:
    from gym_aloha.tasks.sim import TransferCubeTask
    from gym_aloha.tasks.sim_end_effector import BimanualViperXEndEffectorTask, TransferCubeEndEffectorTask

    class EETask(TransferCubeEndEffectorTask):
        """The end-effector task with a given box pose and no rendered images."""

        def __init__(self, box_pose: np.ndarray) -> None:
            super().__init__()
            self.box_pose = box_pose

        def initialize_episode(self, physics: Any) -> None:
            self.initialize_robots(physics)
            start = physics.model.name2id("red_box_joint", "joint")
            np.copyto(physics.data.qpos[start : start + 7], self.box_pose)
            BimanualViperXEndEffectorTask.initialize_episode(self, physics)

        def get_observation(self, physics: Any) -> Any:
            obs = collections.OrderedDict()
            obs["qpos"] = self.get_qpos(physics)
            obs["gripper_ctrl"] = physics.data.ctrl.copy()
            return obs

    class JointTask(TransferCubeTask):
        """The joint-space task (what ``gym_aloha/AlohaTransferCube-v0`` steps), no rendered images."""

        def get_observation(self, physics: Any) -> Any:
            obs = collections.OrderedDict()
            obs["qpos"] = self.get_qpos(physics)
            return obs

    return EETask, JointTask


def _environment(xml: str, task: Any) -> Any:
    from dm_control import mujoco
    from dm_control.rl import control
    from gym_aloha.constants import ASSETS_DIR, DT

    physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / xml))
    return control.Environment(
        physics, task, float("inf"), control_timestep=DT, n_sub_steps=None, flat_observation=False
    )


def joint_trajectory(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The scripted end-effector episode for ``seed``'s box pose, as 14-D joint actions; and the pose."""
    from gym_aloha.constants import normalize_puppet_gripper_position
    from gym_aloha.utils import sample_box_pose

    box = sample_box_pose(seed)
    ee_task, _ = _tasks()
    env = _environment("bimanual_viperx_end_effector_transfer_cube.xml", ee_task(box))
    ts = env.reset()
    data = env.physics.data
    left0 = np.concatenate([data.mocap_pos[0], data.mocap_quat[0]])
    right0 = np.concatenate([data.mocap_pos[1], data.mocap_quat[1]])
    left, right = waypoints(left0, right0, box[:3])
    observations = [ts.observation]
    for t in range(EE_STEPS):
        ts = env.step(np.concatenate([_interpolate(left, t), _interpolate(right, t)]))
        observations.append(ts.observation)
    trajectory = []
    for obs in observations:  # commanded gripper openings instead of the measured ones (as ACT)
        joints = np.array(obs["qpos"], dtype=np.float64)
        joints[6] = normalize_puppet_gripper_position(obs["gripper_ctrl"][0])
        joints[13] = normalize_puppet_gripper_position(obs["gripper_ctrl"][2])
        trajectory.append(joints)
    return trajectory, box


def run_episode(seed: int, max_steps: int = MAX_STEPS) -> dict[str, Any]:
    """Replay the scripted trajectory in the joint-space task; success = reward 4 within ``max_steps``."""
    from gym_aloha.tasks import sim

    trajectory, box = joint_trajectory(seed)
    _, joint_task = _tasks()
    sim.BOX_POSE[0] = box  # how gym-aloha's reset() places the cube
    env = _environment("bimanual_viperx_transfer_cube.xml", joint_task())
    env.reset()
    rewards = []
    for t in range(min(max_steps, len(trajectory))):
        rewards.append(float(env.step(trajectory[t]).reward))
        if rewards[-1] == SUCCESS_REWARD:
            break
    return {
        "seed": seed,
        "success": max(rewards) == SUCCESS_REWARD,
        "max_reward": max(rewards),
        "length": len(rewards),
    }
