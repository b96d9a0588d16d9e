"""The package layout: side folders install as fastvla.* sub-packages and never shadow other libraries."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SIDE_PACKAGES = {
    "envs": "fastvla.envs",
    "policies": "fastvla.policies",
    "datasets": "fastvla.datasets",
    "eval": "fastvla.eval",
}


@pytest.mark.parametrize(("folder", "name"), sorted(SIDE_PACKAGES.items()))
def test_side_folders_install_as_subpackages(folder: str, name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == REPO_ROOT / folder


def test_repo_root_not_on_sys_path() -> None:
    # pytest runs with --import-mode=importlib, so our `datasets/` folder cannot shadow Hugging Face's.
    assert str(REPO_ROOT) not in [str(Path(p).resolve()) for p in sys.path if p]


def test_import_datasets_is_not_our_folder() -> None:
    spec = importlib.util.find_spec("datasets")
    if spec is not None:
        assert spec.origin is None or not Path(spec.origin).resolve().is_relative_to(REPO_ROOT / "datasets")


def _absolute_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_imports_side_folders_as_top_level() -> None:
    offenders = []
    for folder in ("fastvla", *SIDE_PACKAGES, "tests", "benchmarks"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            bad = _absolute_imports(path) & {"envs", "policies", "eval"}
            # `datasets` may only mean Hugging Face's library, never our folder.
            if bad:
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {sorted(bad)}")
    assert not offenders, "import the side packages as fastvla.<name>: " + "; ".join(offenders)


def test_cli_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastvla", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT.parent,
        check=True,
    )
    assert "usage: fastvla" in out.stdout
