"""Named access to the tabletop MuJoCo model, and the differential-IK controller.

Task code touches MuJoCo only through :class:`TabletopPhysics` (the way dm_control's ``Physics``
subclasses wrap a model): arm joints, the gripper, the tool-centre point (TCP), cubes and the target
zone are looked up by name in ``envs/assets/tabletop/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastvla.envs.rendering import INSTALL_HINT, select_backend

select_backend()  # must precede `import mujoco`

# PyOpenGL raises AttributeError or OSError inside `import mujoco` when the GL library is missing.
try:
    import mujoco
except (ImportError, AttributeError, OSError) as exc:
    raise RuntimeError(
        f"importing mujoco with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} failed ({exc!r}). {INSTALL_HINT}"
    ) from exc

ASSETS = Path(__file__).resolve().parent / "assets"
SCENE_XML = ASSETS / "tabletop" / "scene.xml"

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
N_CUBES = 4
CUBE_HALF = 0.02  # cube half-size, metres
FINGER_MAX = 0.04  # travel of each finger, metres (opening = 2 x finger position)
TABLE_Z = 0.0  # world z of the table top


def quat_to_mat(quat: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion ``(w, x, y, z)``."""
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, dtype=np.float64))
    return mat.reshape(3, 3)


def mat_to_quat(mat: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` of a 3x3 rotation matrix."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(mat, dtype=np.float64).reshape(9))
    return quat


def rotvec_to_mat(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (radians)."""
    quat = np.zeros(4)
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(rotvec, dtype=np.float64) / angle, angle)
    return quat_to_mat(quat)


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame axis-angle vector that rotates ``current`` onto ``target`` (both 3x3)."""
    q_t, q_c = mat_to_quat(target), mat_to_quat(current)
    err = np.zeros(3)
    mujoco.mju_subQuat(err, q_t, q_c)  # in the current frame
    return current @ err


def down_orientation(yaw: float) -> np.ndarray:
    """TCP orientation pointing straight down with the fingers' closing axis rotated by ``yaw``.

    At yaw 0 the hand's x axis is world +x and the fingers close along world y.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


class TabletopPhysics:
    """The tabletop model and data, with by-name accessors and a damped-least-squares IK solver.

    Args:
        xml_path: Scene file (defaults to the tabletop scene).
    """

    def __init__(self, xml_path: Path | str = SCENE_XML):
        self.model = mujoco.MjModel.from_xml_path(str(xml_path))
        self.data = mujoco.MjData(self.model)
        self._ik_data = mujoco.MjData(self.model)
        m = self.model
        self.arm_qpos_adr = np.array([m.joint(n).qposadr[0] for n in ARM_JOINTS])
        self.arm_dof_adr = np.array([m.joint(n).dofadr[0] for n in ARM_JOINTS])
        self.finger_qpos_adr = np.array([m.joint(n).qposadr[0] for n in FINGER_JOINTS])
        self.arm_ctrl = np.array([m.actuator(n).id for n in ARM_JOINTS])
        self.finger_ctrl = np.array([m.actuator(n).id for n in FINGER_JOINTS])
        self.joint_low = np.array([m.joint(n).range[0] for n in ARM_JOINTS])
        self.joint_high = np.array([m.joint(n).range[1] for n in ARM_JOINTS])
        self.tcp_id = m.site("tcp").id
        self.cube_body = [m.body(f"cube{i}").id for i in range(N_CUBES)]
        self.cube_geom = [m.geom(f"cube{i}").id for i in range(N_CUBES)]
        self.cube_qpos_adr = [m.joint(f"cube{i}").qposadr[0] for i in range(N_CUBES)]
        self.cube_dof_adr = [m.joint(f"cube{i}").dofadr[0] for i in range(N_CUBES)]
        self.finger_geoms = {m.geom(n).id for n in FINGER_JOINTS}
        self.zone_mocap = m.body("zone").mocapid[0]
        self.zone_geom = m.geom("zone").id
        self.home_key = m.key("home").id
        self.home_qpos = m.key("home").qpos[self.arm_qpos_adr].copy()
        self.control_dt = 0.1
        self.n_substeps = 50

    # --- state -------------------------------------------------------------------------------------
    def reset_home(self) -> None:
        """Reset the simulation to the ``home`` keyframe."""
        mujoco.mj_resetDataKeyframe(self.model, self.data, self.home_key)
        mujoco.mj_forward(self.model, self.data)

    def forward(self) -> None:
        mujoco.mj_forward(self.model, self.data)

    @property
    def arm_qpos(self) -> np.ndarray:
        return self.data.qpos[self.arm_qpos_adr].copy()

    @property
    def gripper_opening(self) -> float:
        """Distance between the finger pads, metres (0 closed, 0.08 fully open)."""
        return float(self.data.qpos[self.finger_qpos_adr].sum())

    @property
    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.tcp_id].copy()

    @property
    def tcp_mat(self) -> np.ndarray:
        return self.data.site_xmat[self.tcp_id].reshape(3, 3).copy()

    def cube_pos(self, i: int) -> np.ndarray:
        return self.data.xpos[self.cube_body[i]].copy()

    def cube_mat(self, i: int) -> np.ndarray:
        return self.data.xmat[self.cube_body[i]].reshape(3, 3).copy()

    def cube_yaw(self, i: int) -> float:
        """Yaw of the cube's face normal closest to world x, in (-pi/4, pi/4]."""
        mat = self.cube_mat(i)
        # The column most aligned with world z is the vertical axis; pick another for the yaw.
        vertical = int(np.argmax(np.abs(mat[2])))
        horizontal = mat[:, (vertical + 1) % 3]
        yaw = float(np.arctan2(horizontal[1], horizontal[0]))
        return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)

    def set_cube_pose(self, i: int, pos: np.ndarray, yaw: float = 0.0) -> None:
        adr, dof = self.cube_qpos_adr[i], self.cube_dof_adr[i]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.data.qvel[dof : dof + 6] = 0.0

    def set_cube_rgba(self, i: int, rgba: np.ndarray) -> None:
        self.model.geom_rgba[self.cube_geom[i]] = rgba

    def disable_cube(self, i: int) -> None:
        """Take a cube out of the scene: invisible, no contacts, floating far below the table."""
        self.model.geom_rgba[self.cube_geom[i], 3] = 0.0
        self.model.geom_contype[self.cube_geom[i]] = 0
        self.model.geom_conaffinity[self.cube_geom[i]] = 0
        self.model.body_gravcomp[self.cube_body[i]] = 1.0

    def set_zone(self, pos: np.ndarray, rgba: np.ndarray | None = None, radius: float | None = None) -> None:
        self.data.mocap_pos[self.zone_mocap] = pos
        if rgba is not None:
            self.model.geom_rgba[self.zone_geom] = rgba
        if radius is not None:
            self.model.geom_size[self.zone_geom, 0] = radius

    @property
    def zone_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self.zone_mocap].copy()

    def finger_contacts(self, i: int) -> int:
        """How many fingers touch cube ``i`` (0, 1 or 2)."""
        cube = self.cube_geom[i]
        touching = set()
        for c in self.data.contact[: self.data.ncon]:
            if c.geom1 == cube and c.geom2 in self.finger_geoms:
                touching.add(c.geom2)
            elif c.geom2 == cube and c.geom1 in self.finger_geoms:
                touching.add(c.geom1)
        return len(touching)

    # --- control -----------------------------------------------------------------------------------
    def set_arm_pose(self, qpos: np.ndarray, gripper: float = 1.0) -> None:
        """Teleport the arm (and its actuator targets) to ``qpos``; gripper opening fraction in [0, 1]."""
        self.data.qpos[self.arm_qpos_adr] = qpos
        self.data.qvel[self.arm_dof_adr] = 0.0
        self.data.qpos[self.finger_qpos_adr] = gripper * FINGER_MAX
        self.data.ctrl[self.arm_ctrl] = qpos
        self.data.ctrl[self.finger_ctrl] = gripper * FINGER_MAX
        mujoco.mj_forward(self.model, self.data)

    def step(self, arm_target: np.ndarray, gripper: float) -> None:
        """Run one control period: joint targets (rad) and gripper opening fraction in [0, 1]."""
        self.data.ctrl[self.arm_ctrl] = np.clip(arm_target, self.joint_low, self.joint_high)
        self.data.ctrl[self.finger_ctrl] = float(np.clip(gripper, 0.0, 1.0)) * FINGER_MAX
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        # mj_step leaves positions one substep ahead of kinematics; refresh derived quantities.
        mujoco.mj_forward(self.model, self.data)

    def solve_ik(
        self,
        target_pos: np.ndarray,
        target_mat: np.ndarray,
        q_init: np.ndarray | None = None,
        iterations: int = 8,
        damping: float = 0.05,
        nullspace_gain: float = 0.1,
    ) -> np.ndarray:
        """Damped-least-squares IK for the TCP pose, on a scratch copy of the kinematics.

        Args:
            target_pos: TCP position, world frame (3,).
            target_mat: TCP orientation (3, 3).
            q_init: Starting joint angles (defaults to the current ones).
            iterations: Newton steps.
            damping: DLS damping lambda (larger = smoother near singularities, less exact).
            nullspace_gain: Pull of the redundant DoF toward the home posture.

        Returns:
            Joint angles (7,), clipped to the joint limits.
        """
        m, d = self.model, self._ik_data
        q = self.arm_qpos if q_init is None else np.array(q_init, dtype=np.float64)
        d.qpos[:] = self.data.qpos
        jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        for _ in range(iterations):
            d.qpos[self.arm_qpos_adr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            err = np.concatenate(
                [
                    target_pos - d.site_xpos[self.tcp_id],
                    rotation_error(target_mat, d.site_xmat[self.tcp_id].reshape(3, 3)),
                ]
            )
            mujoco.mj_jacSite(m, d, jacp, jacr, self.tcp_id)
            jac = np.vstack([jacp, jacr])[:, self.arm_dof_adr]  # (6, 7)
            jjt = jac @ jac.T + damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, err)
            # Null-space posture term keeps the elbow near home (the arm is redundant).
            # (The exact pseudo-inverse makes the projector leave the TCP pose untouched.)
            dq += (np.eye(7) - np.linalg.pinv(jac) @ jac) @ (nullspace_gain * (self.home_qpos - q))
            q = np.clip(q + dq, self.joint_low, self.joint_high)
            if np.linalg.norm(err) < 1e-5:
                break
        return q
