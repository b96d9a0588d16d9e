"""The third-party table in README.md and docs/thirdparty.md is what ``thirdparty.py --render-readme``
makes of the committed results JSONs (a hand edit of a number, or a JSON rerun without re-rendering,
fails here)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def thirdparty() -> Any:
    sys.path.insert(0, str(BENCH))  # the script imports _common from beside it
    try:
        spec = importlib.util.spec_from_file_location("thirdparty_bench", BENCH / "thirdparty.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _section(text: str) -> tuple[str, list[str]]:
    match = re.search(
        r"<!-- thirdparty-table:begin \(generated: python benchmarks/thirdparty.py "
        r"--render-readme ([^)]*)\) -->\n(.*?)\n<!-- thirdparty-table:end -->",
        text,
        re.S,
    )
    assert match, "the thirdparty-table markers are missing"
    return match.group(2), match.group(1).split()


@pytest.mark.parametrize("doc", ["README.md", "docs/thirdparty.md"])
def test_table_is_rendered_from_the_committed_jsons(thirdparty: Any, doc: str) -> None:
    table, jsons = _section((ROOT / doc).read_text())
    merged, sources = thirdparty.merge_reports([ROOT / p for p in jsons])
    assert table == thirdparty.format_table(merged)
    assert sources["pick-place-v3"] == "thirdparty_more.json"  # later runs fill in their tasks


def test_later_runs_fill_and_replace_parts_per_task(thirdparty: Any, tmp_path: Path) -> None:
    row = {"episodes": 10, "successes": 5, "success_rate": 0.5, "success_ci95": [0.2, 0.8]}
    first = {
        "metaworld": {"tasks": {"push-v3": {"scripted": row}, "reach-v3": {"scripted": row}}},
        "fetch": {"task": "FetchPickAndPlace-v4", "heuristic": row},
    }
    better = {**row, "successes": 9, "success_rate": 0.9, "success_ci95": [0.6, 0.98]}
    second = {"metaworld": {"tasks": {"push-v3": {"finetuned": better}}}}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, report in zip(paths, (first, second)):
        path.write_text(json.dumps(report))
    merged, sources = thirdparty.merge_reports(paths)
    assert list(merged["metaworld"]["tasks"]) == ["reach-v3", "push-v3"]  # the script's task order
    assert merged["metaworld"]["tasks"]["push-v3"] == {"scripted": row, "finetuned": better}
    assert sources == {"push-v3": "b.json"} and "aloha" not in merged
    lines = thirdparty.format_table(merged).splitlines()
    assert lines[3] == "| Meta-World MT1 | push-v3 | 50% (5/10, CI 20-80) | 90% (9/10, CI 60-98) |"
    assert lines[-1].startswith("| Fetch | FetchPickAndPlace-v4 | 50%")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "intro\n<!-- thirdparty-table:begin (generated: x) -->\nold\n<!-- thirdparty-table:end -->\nend\n"
    )
    assert thirdparty.render_readme(paths, [doc, tmp_path / "a.json"]) == [doc]
    assert doc.read_text() == (
        "intro\n<!-- thirdparty-table:begin (generated: x) -->\n"
        + thirdparty.format_table(merged)
        + "\n<!-- thirdparty-table:end -->\nend\n"
    )
    broken = tmp_path / "broken.md"
    broken.write_text("<!-- thirdparty-table:begin (generated: x) -->\nold\n")  # no end marker
    with pytest.raises(ValueError, match="no end marker"):
        thirdparty.render_readme(paths, [broken])
    assert broken.read_text() == "<!-- thirdparty-table:begin (generated: x) -->\nold\n"
