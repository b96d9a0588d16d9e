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


# --- import direction: side folders import the core; the core reaches them only through injection ---------
CORE_FOLDERS = ("fastvla/model", "fastvla/training")
SIDE_MODULES = tuple(SIDE_PACKAGES.values())
#: (core file, side module it imports) -> why. Keep this short: inject instead (Trainer(eval_hook=, data=)).
CORE_IMPORTS_ALLOWED = {
    ("fastvla/training/data.py", "fastvla.datasets.training"): (
        "default_training_data(): the LeRobot reader a Trainer uses when the caller injects no `data`, so "
        "train(cfg), `fastvla train` and the benchmarks stay one-liners; deferred (that module imports "
        "fastvla.training.data)"
    ),
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def _imports_anywhere(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``: module level or in functions, absolute or relative,
    ``from pkg import sub`` (as ``pkg.sub``) and ``importlib.import_module("...")`` with a literal name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _side_imports(path: Path, module: str) -> list[tuple[int, str]]:
    return [
        (line, name)
        for line, name in _imports_anywhere(path, module)
        if any(name == side or name.startswith(side + ".") for side in SIDE_MODULES)
    ]


def test_import_checker_sees_every_form(tmp_path: Path) -> None:
    source = (
        "import fastvla.envs\n"
        "from fastvla import eval as ev\n"
        "from ..datasets import training\n"
        "import importlib\n"
        "def f():\n"
        "    from fastvla.policies.loading import load_policy\n"
        "    return importlib.import_module('fastvla.envs.rendering')\n"
        "from fastvla.model import FastVLAModel\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    names = {name for _, name in _side_imports(path, "fastvla.training.mod")}
    assert names == {
        "fastvla.envs",
        "fastvla.eval",
        "fastvla.datasets",
        "fastvla.datasets.training",
        "fastvla.policies.loading",
        "fastvla.policies.loading.load_policy",
        "fastvla.envs.rendering",
    }


def test_core_does_not_import_side_folders() -> None:
    """fastvla/model and fastvla/training never import envs, datasets, policies or eval (STYLE.md)."""
    offenders, used = [], set()
    for folder in CORE_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            for line, name in _side_imports(path, _module_name(path)):
                allowed = [
                    (f, m) for f, m in CORE_IMPORTS_ALLOWED if f == rel and f"{name}.".startswith(m + ".")
                ]
                if allowed:
                    used.update(allowed)
                else:
                    offenders.append(f"{rel}:{line} imports {name}")
    assert not offenders, (
        "the core must not import side folders; inject what it needs (as Trainer takes eval_hook= and "
        "data=), or allow-list it with a reason in CORE_IMPORTS_ALLOWED: " + "; ".join(offenders)
    )
    stale = sorted(set(CORE_IMPORTS_ALLOWED) - used)
    assert not stale, f"allow-listed imports no longer present, remove them: {stale}"
