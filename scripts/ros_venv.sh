#!/usr/bin/env bash
# Create a ROS 2 venv from PyPI wheels for the rclpy interop tests and the rclpy bridge:
#   bash scripts/ros_venv.sh jazzy    -> .venv-ros-jazzy   (rclpy 7.1.x, Jazzy LTS)
#   bash scripts/ros_venv.sh kilted   -> .venv-ros-kilted  (rclpy 9.1.x, Kilted)
#   bash scripts/ros_venv.sh all      -> both, in parallel (what `make ros-venvs` / `make test` run)
# Each holds rclpy, the default RMW (rmw_fastrtps_cpp: its library must be installed explicitly or
# `import rclpy` fails), the message packages the bridge speaks, and numpy/pillow for fastvla.ros2, which
# runs from the source tree (PYTHONPATH) so the main venv's torch stack is not needed; then
# scripts/ros_interfaces.sh builds the action types (fastvla_msgs, control_msgs' FollowJointTrajectory)
# with rosidl. ~330 MB and ~2-3 min per venv with a warm pip cache (both are built in parallel).
# Kept apart from .venv: the ROS wheels pin their own numpy/yaml/lark versions.
# Re-runs are no-ops unless this script changed (stamp file).
set -euo pipefail
distro="${1:?usage: scripts/ros_venv.sh jazzy|kilted|all [VENV_DIR]}"
cd "$(dirname "$0")/.."
if [[ "$distro" == all ]]; then
  bash "$0" jazzy & jazzy=$!
  bash "$0" kilted & kilted=$!
  wait "$jazzy" && wait "$kilted"
  exit
fi
venv="${2:-.venv-ros-$distro}"
python="${ROS_PYTHON:-python3.11}"
case "$distro" in
  jazzy) prefix=ros-jazzy ;;
  kilted) prefix=ros-kilted ;;
  *) echo "unknown distro '$distro'; choose jazzy or kilted" >&2; exit 2 ;;
esac
pkgs=(rclpy rmw-fastrtps-cpp std-msgs sensor-msgs trajectory-msgs action-msgs builtin-interfaces)
stamp="$venv/.ros-installed"
want="$(cat "$0" scripts/ros_interfaces.sh fastvla/ros2/interfaces/*/*.* fastvla/ros2/interfaces/*/*/* | sha1sum | cut -c1-12)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
quiet() { { "$@" 2>&1; } | { grep -v "is ignored: it is neither" || true; }; }  # drop pip index noise
quiet "$venv/bin/python" -m pip install -q --upgrade pip
quiet "$venv/bin/python" -m pip install -q "${pkgs[@]/#/$prefix-}" "numpy>=1.24" pillow
"$venv/bin/python" -c "import rclpy, sensor_msgs.msg, trajectory_msgs.msg, action_msgs.msg" \
  || { echo "ROS 2 $distro venv $venv: import rclpy failed" >&2; exit 1; }
bash scripts/ros_interfaces.sh "$distro" "$venv"
echo "$want" > "$stamp"
echo "ROS 2 $distro venv ready: $venv"
