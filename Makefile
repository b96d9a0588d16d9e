# FastVLA: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Third-party MuJoCo envs (Meta-World, gym-aloha, Fetch) pin MuJoCo 3.3.x: their own venv (docs/thirdparty.md).
VENV_3P ?= .venv-thirdparty
PY_3P := $(VENV_3P)/bin/python
# torch first, pinned: a local CPU build here; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
export MUJOCO_GL ?= egl

.PHONY: demo test test-core test-thirdparty test-all lint format bench bench-thirdparty venv venv-thirdparty \
	sysdeps ros-venvs clean

# pip extras of the two venvs (variables: a literal comma would split $(call ...)'s arguments).
EXTRAS := dev,serve
EXTRAS_3P := thirdparty,$(EXTRAS)

# $(call venv_recipe,PYTHON OF THE VENV,VENV FOLDER,EXTRAS): create the venv if needed, torch first, then the
# package with EXTRAS. Rebuilt only when pyproject changes.
define venv_recipe
	test -x $(1) || $(PYTHON) -m venv $(2)
	$(1) -m pip install -q --upgrade pip
	$(1) -m pip install -q "$(TORCH)"
	$(1) -m pip install -q -e ".[$(3)]"
	touch $@
endef

$(VENV)/.installed: pyproject.toml
	$(call venv_recipe,$(PY),$(VENV),$(EXTRAS))

venv: $(VENV)/.installed

# The `thirdparty` extra in its own venv.
$(VENV_3P)/.installed: pyproject.toml
	$(call venv_recipe,$(PY_3P),$(VENV_3P),$(EXTRAS_3P))

venv-thirdparty: $(VENV_3P)/.installed

sysdeps:
	bash scripts/ensure_system_deps.sh

# ROS 2 Jazzy and Kilted from PyPI (rclpy + Fast DDS + built action types) for the rclpy tests in tests/ros2.
ros-venvs:
	bash scripts/ros_venv.sh all

demo: venv sysdeps
	$(VENV)/bin/fastvla demo

# CI: FastVLA's own tests, then the third-party env tests in their venv (they skip in the main one).
test: test-core test-thirdparty

test-core: venv sysdeps ros-venvs
	$(VENV)/bin/pytest -m "not gpu" -q

test-thirdparty: venv-thirdparty sysdeps
	$(VENV_3P)/bin/pytest -m "not gpu" -q tests/thirdparty

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

# Meta-World / gym-aloha / Fetch results (benchmarks/results/thirdparty.json); see docs/thirdparty.md.
bench-thirdparty: venv-thirdparty sysdeps
	OMP_NUM_THREADS=1 $(PY_3P) benchmarks/thirdparty.py

clean:
	rm -rf $(VENV) $(VENV_3P) .venv-ros-jazzy .venv-ros-kilted outputs .pytest_cache .ruff_cache *.egg-info
