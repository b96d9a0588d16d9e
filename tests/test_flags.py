"""Every command's config: flags generated from one dataclass, --config, --print-config, old spellings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fastvla.cli import build_parser, main
from fastvla.datasets.config import RecordConfig
from fastvla.eval import EvalConfig, EvalPipelineConfig, evaluate
from fastvla.eval.toy import ToyReachEnv
from fastvla.serving.config import ServeConfig
from fastvla.training import TrainConfig
from fastvla.utils.flags import config_from_args

CONFIGS = {"train": TrainConfig, "eval": EvalPipelineConfig, "record": RecordConfig, "serve": ServeConfig}


def _config(argv: list[str]):
    args = build_parser().parse_args(argv)
    return config_from_args(args, CONFIGS[argv[0]])


def test_old_flag_spellings_still_parse() -> None:
    cfg = _config(
        ["eval", "--policy", "scripted", "--env", "a", "b", "--episodes", "3", "--out", "o", "--no-progress",
         "--env-kwargs", '{"image_size": 48}', "--camera-keys", "pixels/front", "--load-in-4bit"]
    )  # fmt: skip
    assert cfg.env == ("a", "b") and cfg.eval.n_episodes == 3 and cfg.eval.out_dir == "o"
    assert not cfg.eval.progress and cfg.eval.env_kwargs == {"image_size": 48} and cfg.load_in_4bit
    assert cfg.eval.video_obs_paths == ("pixels/front",)
    # ...and as config-file keys: a file written before a field was renamed still loads.
    old_file = type(cfg.eval).from_dict({"camera_keys": ["pixels/front"], "episodes": 3, "out": "o"})
    assert old_file == cfg.eval.__class__(video_obs_paths=("pixels/front",), n_episodes=3, out_dir="o")
    rec = _config(
        ["record", "--env", "e", "--episodes-per-env", "4", "--out", "d", "--cameras", "front,wrist"]
    )
    assert rec.episodes == 4 and rec.cameras == ("front", "wrist") and rec.seed is None
    assert _config(["record", "--env", "e", "--episodes", "4", "--out", "d", "--keep-failed"]).keep_failed


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_print_config_round_trips_through_config_file(command: str, tmp_path: Path, capsys) -> None:
    required = {
        "train": ["--data.root", "data"],
        "eval": ["--policy", "random", "--env", "fastvla/ReachCube-v0", "--out", "o"],
        "record": ["--env", "fastvla/ReachCube-v0", "--episodes", "2", "--out", "d"],
        "serve": ["--policy", "ckpt", "--max-queue", "3"],
    }[command]
    assert main([command, *required, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(printed))
    cfg = _config([command, "--config", str(path)])
    assert cfg.to_dict() == printed
    override = ["--port", "9"] if command == "serve" else ["--seed", "5"]  # flags beat the file
    assert _config([command, "--config", str(path), *override]).to_dict() != printed


def test_missing_required_flag_names_it(capsys) -> None:
    assert main(["record", "--env", "e", "--out", "d"]) == 2
    assert "--episodes is required" in capsys.readouterr().err
    assert main(["eval", "--policy", "scripted", "--env", "e"]) == 2
    assert "--out is required" in capsys.readouterr().err


def test_unknown_config_key_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("policy: p\nlimits:\n  max_conections: 3\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "limits.max_conections" in capsys.readouterr().err


def test_evaluate_takes_a_config_or_keywords() -> None:
    cfg = EvalConfig(n_episodes=3, batch_size=2, seed=4, progress=False, vectorization="sync")
    by_config = evaluate("scripted", ToyReachEnv, cfg)
    by_keywords = evaluate(
        "scripted", ToyReachEnv, n_episodes=3, batch_size=2, seed=4, progress=False, vectorization="sync"
    )
    overridden = evaluate("scripted", ToyReachEnv, cfg, n_episodes=1)
    assert [e.seed for e in by_config.episodes] == [e.seed for e in by_keywords.episodes] == [4, 5, 6]
    assert by_config.info["meta"]["config"]["n_episodes"] == 3 and overridden.n_episodes == 1
    with pytest.raises(TypeError, match="unknown option"):
        evaluate("scripted", ToyReachEnv, n_episode=3)
    with pytest.raises(ValueError, match="n_episodes=0"):
        EvalConfig(n_episodes=0)


def test_string_mapping_fields_take_key_value_items(capsys) -> None:
    """``dict[str, str]`` fields: ``KEY:=VALUE``/``KEY=VALUE``, comma-separated, repeated, or JSON."""
    import argparse
    from dataclasses import dataclass

    from fastvla.utils.config import config_field
    from fastvla.utils.flags import add_config_arguments

    @dataclass
    class Remap:
        topics: dict[str, str] = config_field(help="Name -> topic.", aliases=("--topic",), metavar="N:=T")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Remap)
    argv = ["--topics", "a:=/x=1,b=/y", "--topic", "c:=/z", '{"d": "/w"}']
    assert config_from_args(parser.parse_args(argv), Remap).topics == {
        "a": "/x=1",  # after ':=' the value may hold '='
        "b": "/y",
        "c": "/z",
        "d": "/w",
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--topics", "a/x"])
    assert "'a/x' must be N:=T" in capsys.readouterr().err
    assert "N:=T" in parser.format_help()
