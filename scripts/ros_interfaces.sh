#!/usr/bin/env bash
# Build FastVLA's ROS 2 interface packages (fastvla/ros2/interfaces: fastvla_msgs, and the control_msgs
# FollowJointTrajectory subset) into a PyPI ROS venv with the real rosidl toolchain (ament_cmake +
# rosidl_default_generators wheels, cmake, a C/C++ compiler), the way colcon would on a ROS install:
#   bash scripts/ros_interfaces.sh jazzy|kilted [VENV_DIR]
# The wheels' CMake exports name the Python/numpy include dirs of the machine that built them
# (/opt/python/cp311-cp311/...); they are pointed at this venv's first. ~1 min per package on 2 cores.
set -euo pipefail
distro="${1:?usage: scripts/ros_interfaces.sh jazzy|kilted [VENV_DIR]}"
cd "$(dirname "$0")/.."
root="$PWD"
venv="$(cd "${2:-.venv-ros-$distro}" && pwd)"
prefix="ros-$distro"
# ament_cmake's meta-wheel leaves these out; found by configuring until nothing was missing.
build_pkgs=(ament-cmake ament-cmake-ros ament-cmake-include-directories ament-package rosidl-default-generators
  rosidl-core-generators ament-cmake-gmock ament-cmake-gtest ament-cmake-pytest)
case "$distro" in
  jazzy) build_pkgs+=(python-cmake-module) ;;
  kilted) build_pkgs+=(ament-cmake-ros-core) ;;  # Kilted dropped python_cmake_module
esac
if ! command -v c++ >/dev/null || ! command -v cc >/dev/null; then  # a fresh machine: get the compilers
  { apt-get update -qq && apt-get install -y -qq gcc g++ >/dev/null; } \
    || { echo "scripts/ros_interfaces.sh needs gcc and g++ (apt-get install gcc g++)" >&2; exit 1; }
fi
quiet() { { "$@" 2>&1; } | { grep -v "is ignored: it is neither" || true; }; }
quiet "$venv/bin/python" -m pip install -q "${build_pkgs[@]/#/$prefix-}" catkin-pkg "cmake>=3.22"
inc="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')"
{ grep -rl "/opt/python/cp311-cp311" "$venv"/share/*/cmake || true; } | xargs -r sed -i \
  -e "s|/opt/python/cp311-cp311/include/python3.11|$inc|g" \
  -e "s|/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include|$np_inc|g"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
for pkg in fastvla_msgs control_msgs; do
  mkdir -p "$build/$pkg"
  (
    cd "$build/$pkg"
    PATH="$venv/bin:$PATH" cmake "$root/fastvla/ros2/interfaces/$pkg" -DCMAKE_PREFIX_PATH="$venv" \
      -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$venv/bin/python" -DBUILD_TESTING=OFF \
      > cmake.log 2>&1 || { tail -40 cmake.log >&2; exit 1; }
    PATH="$venv/bin:$PATH" make -j2 install > make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
  )
done
"$venv/bin/python" -c "from fastvla_msgs.action import RunInstruction; from control_msgs.action import FollowJointTrajectory"
echo "ROS 2 $distro interfaces built into $venv: fastvla_msgs, control_msgs (FollowJointTrajectory)"
