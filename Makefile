# FastVLA: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: a local CPU build here; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
export MUJOCO_GL ?= egl

.PHONY: demo test test-all lint format bench venv sysdeps ros-venvs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,serve]"
	touch $@

venv: $(VENV)/.installed

sysdeps:
	bash scripts/ensure_system_deps.sh

# ROS 2 Jazzy and Kilted from PyPI (rclpy + Fast DDS + built action types) for the rclpy tests in tests/ros2.
ros-venvs:
	bash scripts/ros_venv.sh all

demo: venv sysdeps
	$(VENV)/bin/fastvla demo

test: venv sysdeps ros-venvs
	$(VENV)/bin/pytest -m "not gpu" -q

test-all: venv sysdeps ros-venvs
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv sysdeps
	$(VENV)/bin/fastvla bench envs
	$(VENV)/bin/fastvla bench loader

clean:
	rm -rf $(VENV) .venv-ros-jazzy .venv-ros-kilted outputs .pytest_cache .ruff_cache *.egg-info
