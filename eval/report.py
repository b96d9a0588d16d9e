"""Writing evaluation results: ``eval_info.json``, ``report.md`` with a success-rate plot, summary tables."""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastvla.utils.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from fastvla.eval.rollout import EvalResult

EVAL_INFO_FILE = "eval_info.json"
REPORT_FILE = "report.md"
PLOT_FILE = "success_rate.png"
MAX_TASK_ROWS = 8  # with more distinct instructions, the table and plot show the overall row only
_PACKAGES = ("fastvla", "numpy", "gymnasium", "mujoco", "torch", "transformers", "av")


def versions() -> dict[str, str | None]:
    """Python and package versions (read from installed metadata; nothing is imported)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (default: this package), else None."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_eval_info(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The full ``eval_info.json`` content: metrics (LeRobot layout) plus a ``meta`` block."""
    info = dict(metrics)
    info["meta"] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "versions": versions(),
        "git": git_revision(),
        "host": platform.node(),
    }
    return _json_safe(info)


def write_eval_info(path: str | Path, info: dict[str, Any]) -> Path:
    """Write ``info`` as strict, indented JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(_json_safe(info), indent=2, allow_nan=False) + "\n")
    return path


def _fmt_pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def summary_rows(info: dict[str, Any]) -> list[dict[str, str]]:
    """Rows (per task, then overall) of the summary table: success with CI, return, length, n."""

    def row(name: str, agg: dict[str, Any]) -> dict[str, str]:
        low, high = agg["success_ci95"]
        ret, length = agg["avg_sum_reward"], agg["avg_length"]
        return {
            "task": name,
            "success %": f"{agg['pc_success']:.1f}" if agg["pc_success"] is not None else "n/a",
            "95% CI": f"[{_fmt_pct(low)}, {_fmt_pct(high)}]",
            "return": f"{ret:.2f}" if ret is not None else "n/a",
            "length": f"{length:.1f}" if length is not None else "n/a",
            "episodes": f"{agg['n_success']}/{agg['n_episodes']}",
        }

    rows = [row(name, agg) for name, agg in _breakdown(info)]
    rows.append(row("overall", info["overall"]))
    return rows


def _breakdown(info: dict[str, Any], max_rows: int = MAX_TASK_ROWS) -> list[tuple[str, dict[str, Any]]]:
    """Per-env rows for several envs, else per-instruction rows when there are few (paraphrases add up)."""
    if len(info["per_group"]) > 1:
        return list(info["per_group"].items())
    tasks = info["per_task"]
    if 1 < len(tasks) <= max_rows:
        return [(t["task"] or t["task_group"], t["aggregated"]) for t in tasks]
    return []


def markdown_table(rows: list[dict[str, str]]) -> str:
    """Rows of equal keys as a GitHub-flavoured Markdown table."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines)


def print_summary(info: dict[str, Any]) -> None:
    """Print the summary table to the terminal (rich when available)."""
    rows = summary_rows(info)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(markdown_table(rows))
        return
    table = Table(title=f"eval: {info['meta']['config']['policy']} ({info['overall']['eval_s']:.1f} s)")
    for h in rows[0]:
        table.add_column(h, justify="left" if h == "task" else "right")
    for r in rows:
        table.add_row(*r.values())
    Console().print(table)


def comparison_table(results: Mapping[str, EvalResult]) -> str:
    """Markdown table comparing several evaluations (e.g. a policy in fp32 and in 4-bit) side by side.

    Args:
        results: Row label -> :class:`~fastvla.eval.EvalResult`.

    Returns:
        A table with success (and Wilson 95 % CI), mean return, mean length, policy ms per vector step,
        episodes and seeds per row.
    """
    rows = []
    for label, result in results.items():
        overall, cfg = result.info["overall"], result.info["meta"]["config"]
        low, high = result.success_ci95
        rows.append(
            {
                "policy": label,
                "success %": f"{100 * result.success_rate:.1f}",
                "95% CI": f"[{100 * low:.1f}, {100 * high:.1f}]",
                "return": f"{result.mean_return:.2f}",
                "length": f"{result.mean_length:.1f}",
                "policy ms/step": f"{overall.get('policy_ms_per_step', float('nan')):.1f}",
                "episodes": f"{result.n_success}/{result.n_episodes}",
                "seeds": f"{cfg['seed']}..{cfg['seed'] + cfg['n_episodes'] - 1}",
            }
        )
    if not rows:
        raise ValueError("comparison_table needs at least one result")
    return markdown_table(rows)


def _shorten(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (keeps a path's start and its last part)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def plot_success(info: dict[str, Any], path: str | Path) -> Path:
    """Bar plot of the success rate per task (and overall) with Wilson 95 % error bars, as PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [*_breakdown(info), ("overall", info["overall"])]
    names = [n if len(n) <= 28 else n[:26] + "…" for n, _ in entries]
    rates = [100 * (a["success_rate"] or 0.0) for _, a in entries]
    lows = [r - 100 * a["success_ci95"][0] for r, (_, a) in zip(rates, entries)]
    highs = [100 * a["success_ci95"][1] - r for r, (_, a) in zip(rates, entries)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(entries) + 2), 3.5), dpi=100)
    try:
        colors = ["#3a7" if n != "overall" else "#357" for n in names]
        ax.bar(range(len(entries)), rates, yerr=[lows, highs], capsize=4, color=colors)
        rotated = len(entries) > 3
        ticks = {"rotation": 20, "ha": "right"} if rotated else {"ha": "center"}
        ax.set_xticks(range(len(entries)), names, **ticks)
        ax.set_ylim(0, 112)
        ax.set_ylabel("success rate (%)")
        # Two short lines: a long policy path on one line with the caption was clipped at the figure edge.
        policy = _shorten(str(info["meta"]["config"]["policy"]), 40)
        ax.set_title(f"{policy}\nsuccess rate, Wilson 95% CI", fontsize=10)
        for i, r in enumerate(rates):
            ax.text(i + 0.06, r + 1.5, f"{r:.0f}%", ha="left", va="bottom", fontsize=8)  # beside the CI bar
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def render_report(info: dict[str, Any], plot: str | None) -> str:
    """The text of ``report.md``."""
    cfg, meta, overall = info["meta"]["config"], info["meta"], info["overall"]
    git = meta.get("git") or {}
    lines = [
        f"# Evaluation of `{cfg['policy']}`",
        "",
        f"Envs: {', '.join(f'`{e}`' for e in cfg['env'])}; {cfg['n_episodes']} episodes per env, "
        f"seeds {cfg['seed']}..{cfg['seed'] + cfg['n_episodes'] - 1}, batch size {cfg['batch_size']}, "
        f"{overall['eval_s']:.1f} s ({overall['eval_ep_s']:.2f} s/episode; per vector step: policy "
        f"{overall.get('policy_ms_per_step', 0):.1f} ms, env {overall.get('env_ms_per_step', 0):.1f} ms).",
        "",
        markdown_table(summary_rows(info)),
        "",
    ]
    if plot:
        lines += [f"![success rate]({plot})", ""]
    if info.get("summary_video"):
        lines += [f"![episodes]({info['summary_video']})", ""]
    videos = info["overall"]["video_paths"]
    if videos:
        lines += ["Episode videos (green border: success, red: failure):", ""]
        lines += [f"- [{Path(v).parent.name}/{Path(v).name}]({v})" for v in videos]
        lines.append("")
    failures = [e for e in info["per_episode"] if not e["success"]]
    lines += [f"Failed episodes (seed): {', '.join(str(e['seed']) for e in failures[:50]) or 'none'}", ""]
    rev = f"{git.get('commit', '?')[:12]}{' (dirty)' if git.get('dirty') else ''}" if git else "unknown"
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    lines += [f"Produced {meta['created']} at git {rev}; {vers}.", ""]
    return "\n".join(lines)


def write_outputs(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``eval_info.json``, ``success_rate.png`` and ``report.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"eval_info": write_eval_info(out_dir / EVAL_INFO_FILE, result.info)}
    paths["plot"] = plot_success(result.info, out_dir / PLOT_FILE)
    paths["report"] = out_dir / REPORT_FILE
    atomic_write_text(paths["report"], render_report(result.info, PLOT_FILE))
    return paths
