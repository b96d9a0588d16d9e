"""evaluate(): seeding independent of batch size, eval_info.json schema, videos, third-party envs."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fastvla.eval import EvalResult, comparison_table, evaluate
from fastvla.eval.toy import ToyReachEnv
from fastvla.eval.video import count_frames

# Random actions succeed in some episodes and not others: outcomes depend on the seed.
LOOSE = functools.partial(ToyReachEnv, image_size=16, speed=0.25, tolerance=0.35, max_episode_steps=12)


def _outcomes(result: EvalResult) -> list[tuple]:
    return [(e.seed, e.success, e.length, round(e.sum_reward, 9), e.task) for e in result.episodes]


class CountingPolicy:
    """Proportional controller on the state vector; records resets and the tasks it was given."""

    def __init__(self, state_key: str = "agent_pos") -> None:
        self.state_key = state_key
        self.resets = 0
        self.tasks: list = []

    def reset(self) -> None:
        self.resets += 1

    def select_action(self, obs, task=None):
        state = np.asarray(obs[self.state_key])  # (B, 4): point, target
        self.tasks.append(task)
        return np.clip((state[:, 2:] - state[:, :2]) / 0.1, -1, 1)


def test_per_episode_outcomes_do_not_depend_on_batch_size() -> None:
    runs = {
        bs: evaluate(
            "random", LOOSE, n_episodes=7, batch_size=bs, seed=3, progress=False, vectorization="sync"
        )
        for bs in (1, 4)
    }
    one, four = _outcomes(runs[1]), _outcomes(runs[4])
    assert [o[0] for o in one] == list(range(3, 10))
    assert one == four
    successes = [o[1] for o in one]
    assert any(successes) and not all(successes), "the test env must make outcomes seed-dependent"
    assert len({o[3] for o in one}) == len(one)  # every seed gives a different return
    # Episode seeds are absolute: a run starting at seed 4 replays episodes 1.. of the run at seed 3.
    other = evaluate(
        "random", LOOSE, n_episodes=7, batch_size=4, seed=4, progress=False, vectorization="sync"
    )
    assert _outcomes(other)[:6] == one[1:]


def test_async_workers_match_sync() -> None:
    sync = evaluate("random", LOOSE, n_episodes=5, batch_size=2, progress=False, vectorization="sync")
    asyn = evaluate("random", LOOSE, n_episodes=5, batch_size=2, progress=False, vectorization="async")
    assert asyn.info["meta"]["config"]["vectorization"] == ["async"]
    assert _outcomes(asyn) == _outcomes(sync)


def test_policy_reset_per_batch_and_tasks_from_info() -> None:
    policy = CountingPolicy()
    result = evaluate(policy, ToyReachEnv, n_episodes=6, batch_size=4, progress=False, vectorization="sync")
    assert policy.resets == 2  # batches [0..3] and [4, 5] (+2 masked padding rows)
    assert result.success_rate == 1.0
    first = policy.tasks[0]
    assert isinstance(first, list) and len(first) == 4
    assert first == [e.task for e in result.episodes[:4]]
    assert all(t.startswith("reach the ") for t in first)


def test_scripted_beats_random_on_toy_env() -> None:
    scripted = evaluate(
        "scripted", ToyReachEnv, n_episodes=8, batch_size=4, progress=False, vectorization="sync"
    )
    rand = evaluate("random", ToyReachEnv, n_episodes=8, batch_size=4, progress=False, vectorization="sync")
    assert scripted.success_rate == 1.0
    assert rand.success_rate < 0.5
    assert scripted.mean_length < rand.mean_length
    table = comparison_table({"scripted": scripted, "random": rand}).splitlines()
    assert table[2].startswith("| scripted | 100.0 | [67.6, 100.0] |") and table[2].endswith("| 8/8 | 0..7 |")
    assert table[3].startswith(f"| random | {100 * rand.success_rate:.1f} |")
    assert scripted.summary().splitlines()[-1].startswith("| overall | 100.0 | [67.6, 100.0] |")


def test_eval_info_schema_report_and_videos(tmp_path: Path) -> None:
    envs = {"toy_a": ToyReachEnv, "toy_b": functools.partial(ToyReachEnv, cameras=("front",))}
    result = evaluate("scripted", envs, n_episodes=3, batch_size=2, seed=10, max_videos=2, out_dir=tmp_path,
                      progress=False, vectorization="sync")  # fmt: skip
    info = json.loads((tmp_path / "eval_info.json").read_text())
    assert info == result.info
    assert set(info) >= {"per_task", "per_group", "overall", "per_episode", "meta"}
    overall = info["overall"]
    for key, kind in [("pc_success", float), ("avg_sum_reward", float), ("avg_max_reward", float),
                      ("n_episodes", int), ("eval_s", float), ("eval_ep_s", float), ("video_paths", list),
                      ("success_ci95", list), ("avg_length", float), ("n_success", int),
                      ("policy_ms_per_step", float), ("env_ms_per_step", float)]:  # fmt: skip
        assert isinstance(overall[key], kind), key
    assert overall["n_episodes"] == 6 and overall["pc_success"] == 100.0
    assert set(info["per_group"]) == {"toy_a", "toy_b"}
    for task in info["per_task"]:
        assert set(task) == {"task_group", "task_id", "task", "metrics", "aggregated"}
        assert set(task["metrics"]) >= {"sum_rewards", "max_rewards", "successes", "video_paths"}
    assert sum(len(t["metrics"]["successes"]) for t in info["per_task"]) == 6
    episode = info["per_episode"][0]
    assert set(episode) >= {"seed", "success", "length", "sum_reward", "task", "group", "video_path"}
    assert [e["seed"] for e in info["per_episode"]] == [10, 11, 12] * 2
    meta = info["meta"]
    assert meta["config"]["n_episodes"] == 3 and meta["config"]["batch_size"] == 2
    assert meta["versions"]["gymnasium"] and meta["versions"]["python"]
    assert "git" in meta

    # Videos: the first two episodes of each env, one frame per observation (reset + each step).
    assert len(overall["video_paths"]) == 4
    for e in info["per_episode"]:
        if e["episode_index"] < 2:
            path = tmp_path / e["video_path"]
            assert path.parent.name == e["group"] and path.name == f"eval_episode_{e['episode_index']}.mp4"
            assert count_frames(path) == e["length"] + 1
        else:
            assert e["video_path"] is None
    assert (tmp_path / "videos" / "summary.gif").stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "success_rate.png" in report and "| overall | 100.0 |" in report
    assert (tmp_path / "success_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_video_frames_show_border_colour(tmp_path: Path) -> None:
    import av

    result = evaluate("random", ToyReachEnv, n_episodes=1, max_videos=1, out_dir=tmp_path, progress=False)
    assert not result.episodes[0].success
    with av.open(str(tmp_path / result.episodes[0].video_path)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    corner = frame[1, frame.shape[1] // 2].astype(int)  # inside the top border
    assert corner[0] > 150 and corner[1] < 100  # red: failure


def test_third_party_env_with_other_keys(tmp_path: Path) -> None:
    """Flat `cam_high` image and `qpos` state, no instruction in info: the policy reads its own keys."""
    factory = functools.partial(
        ToyReachEnv, cameras=("cam_high",), flat_images=True, state_key="qpos", with_task=False, image_size=24
    )
    policy = CountingPolicy(state_key="qpos")
    result = evaluate(policy, factory, n_episodes=3, batch_size=1, task="reach the target", out_dir=tmp_path,
                      max_videos=1, progress=False)  # fmt: skip
    assert result.success_rate == 1.0
    assert policy.tasks[0] == ["reach the target"]
    assert result.episodes[0].task == "reach the target"
    video = tmp_path / result.video_paths[0]
    assert count_frames(video) == result.episodes[0].length + 1


def test_render_fallback_when_observation_has_no_images(tmp_path: Path) -> None:
    factory = functools.partial(ToyReachEnv, cameras=(), render_mode="rgb_array")
    result = evaluate("scripted", factory, n_episodes=1, out_dir=tmp_path, progress=False)
    assert count_frames(tmp_path / result.video_paths[0]) == result.episodes[0].length + 1


def test_bad_policy_output_names_the_shapes() -> None:
    class Wrong:
        def reset(self) -> None:
            pass

        def select_action(self, obs, task=None):
            return np.zeros((2, 3))

    with pytest.raises(ValueError, match=r"shape \(2, 3\); expected \(2, 2\)"):
        evaluate(Wrong(), ToyReachEnv, n_episodes=2, batch_size=2, progress=False, vectorization="sync")


class ChunkedController:
    """A server-side policy: proportional control as a 1-step action chunk, ``(B, 1, 2)``."""

    def serving_metadata(self) -> dict:
        return {"policy_class": "ChunkedController", "action_dim": 2, "chunk_size": 1, "n_action_steps": 1}

    def predict_action_chunk(self, obs, task=None):
        state = np.asarray(obs["agent_pos"], dtype=np.float32)  # (B, 4)
        return np.clip((state[:, None, 2:] - state[:, None, :2]) / 0.1, -1, 1)  # (B, 1, 2)


def test_remote_policy_by_ws_url() -> None:
    pytest.importorskip("websockets", reason="the serve extra: pip install 'fastvla[serve]'")
    from fastvla.serving import server as server_mod

    with server_mod.PolicyServer(ChunkedController(), port=0) as server:
        assert server.url.startswith("ws://")
        result = evaluate(
            server.url, ToyReachEnv, n_episodes=3, batch_size=2, progress=False, vectorization="sync"
        )
    assert (
        type(result.info["meta"]["config"]["policy"]) is str
        and result.info["meta"]["config"]["policy"] == server.url
    )
    assert result.success_rate == 1.0


SCRIPT = """
from fastvla.eval import evaluate
from fastvla.eval.toy import ToyReachEnv

print("RUN")


class Small(ToyReachEnv):  # defined in __main__: reaches the workers through cloudpickle
    def __init__(self):
        super().__init__(image_size=8)


result = evaluate("scripted", Small, n_episodes=2, batch_size=2, vectorization="async", progress=False)
print("DONE", result.info["meta"]["config"]["vectorization"], result.success_rate)
"""


def test_async_workers_do_not_rerun_an_unguarded_main_script(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = tmp_path / "eval_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("RUN") == 1
    assert "DONE ['async'] 1.0" in proc.stdout


def test_policy_observation_map_picks_video_cameras_and_default_instruction(tmp_path: Path) -> None:
    import av

    from fastvla.eval.video import FrameComposer
    from fastvla.policies import observation_map

    factory = functools.partial(
        ToyReachEnv, cameras=("cam_high", "cam_low"), flat_images=True, state_key="qpos", with_task=False
    )
    policy = CountingPolicy(state_key="qpos")
    policy.obs_map = observation_map.ObservationMap(
        cameras={"front": "cam_high"}, state="qpos", instruction="reach the target"
    )
    result = evaluate(policy, factory, n_episodes=2, out_dir=tmp_path, max_videos=1, progress=False)
    assert [e.task for e in result.episodes] == ["reach the target"] * 2
    with av.open(str(tmp_path / result.video_paths[0])) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    one_camera = FrameComposer("reach the target", True)([np.zeros((32, 32, 3), np.uint8)])
    assert frame.shape == one_camera.shape  # only the policy's camera is shown


def test_auto_falls_back_to_sync_when_async_cannot_start(caplog: pytest.LogCaptureFixture) -> None:
    import threading

    lock = threading.Lock()  # unpicklable: the factory cannot reach worker processes

    def factory() -> ToyReachEnv:
        with lock:
            return ToyReachEnv(image_size=8)

    with caplog.at_level("WARNING", logger="fastvla.eval.rollout"):
        result = evaluate("scripted", factory, n_episodes=2, batch_size=2, progress=False)
    assert result.info["meta"]["config"]["vectorization"] == ["sync"]
    assert result.success_rate == 1.0
    assert "falling back to SyncVectorEnv" in caplog.text
    with pytest.raises(Exception):  # noqa: B017  (explicit async: no silent fallback)
        evaluate("scripted", factory, n_episodes=2, batch_size=2, progress=False, vectorization="async")


def test_open_vector_env_is_reused_and_left_open() -> None:
    import gymnasium as gym

    vec_env = gym.vector.SyncVectorEnv([LOOSE] * 3)
    first = evaluate("random", vec_env, n_episodes=5, progress=False)
    second = evaluate("random", vec_env, n_episodes=5, progress=False)
    assert _outcomes(first) == _outcomes(second)
    assert first.info["meta"]["config"]["batch_size"] == 3
    reference = evaluate("random", LOOSE, n_episodes=5, batch_size=1, progress=False)
    assert _outcomes(first) == _outcomes(reference)
    vec_env.reset(seed=0)  # still open
    vec_env.close()


def _renamed_keys() -> Any:
    """ToyReachEnv with another env's info keys: the instruction in ``goal_text``, success in ``solved``."""
    import gymnasium as gym

    class RenamedInfo(gym.Wrapper):
        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return obs, {"goal_text": info["task"], "solved": info["is_success"]}

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return (
                obs,
                reward,
                terminated,
                truncated,
                {"goal_text": info["task"], "solved": info["is_success"]},
            )

    return RenamedInfo(ToyReachEnv(image_size=8))


def test_observation_map_names_the_instruction_and_success_keys() -> None:
    run = functools.partial(evaluate, env=_renamed_keys, n_episodes=3, progress=False, vectorization="sync")
    unmapped = run(CountingPolicy())
    assert unmapped.success_rate == 0.0 and {e.task for e in unmapped.episodes} == {""}  # no is_success
    obs_map = {
        "cameras": {"front": "pixels/front"},
        "instruction": "info:goal_text",
        "success": "info:solved",
    }
    policy = CountingPolicy()
    mapped = run(policy, obs_map=obs_map)
    assert mapped.success_rate == 1.0 and mapped.info["meta"]["config"]["obs_map"]["success"] == "info:solved"
    assert policy.tasks[0] == [mapped.episodes[0].task] and mapped.episodes[0].task.startswith("reach the ")
    assert run(CountingPolicy(), success="terminated").success_rate == 1.0  # the toy terminates on success
    with pytest.raises(KeyError, match=r"no key 'info:solve'; available: \['goal_text', 'solved'\]"):
        run(CountingPolicy(), obs_map=obs_map, success="info:solve")
    with pytest.raises(ValueError, match="'info:KEY' or 'terminated'"):
        run(CountingPolicy(), success="solved")
