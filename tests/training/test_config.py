"""Training configs: defaults, validation, JSON/YAML round trips and the generated command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fastvla.training import DataConfig, ModelConfig, OptimConfig, TrainConfig
from fastvla.training.args import add_config_arguments, config_from_args


def _parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_every_field_is_documented() -> None:
    import dataclasses

    for cls in (TrainConfig, DataConfig, ModelConfig, OptimConfig):
        for f in dataclasses.fields(cls):
            assert len(f.metadata.get("help", "")) > 3, f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    cfg = TrainConfig(
        data=DataConfig(root="some/data", cameras=("front",), val_episodes=(3, 4)),
        model=ModelConfig(quantization="4bit", lora_r=8),
        optim=OptimConfig(optimizer="paged_adamw8bit", betas=(0.9, 0.95)),
        steps=123,
    )
    cfg.save(tmp_path / f"run{suffix}")
    back = TrainConfig.load(tmp_path / f"run{suffix}")
    assert back == cfg
    assert back.data.cameras == ("front",) and back.optim.betas == (0.9, 0.95)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TrainConfig(steps=0), "steps must be >= 1, got 0"),
        (lambda: DataConfig(val_fraction=1.5), "val_fraction must be in [0, 1), got 1.5"),
        (lambda: ModelConfig(quantization="3bit"), "'3bit' unknown"),
        (lambda: ModelConfig(vision_backbone="a"), "go together"),
        (lambda: OptimConfig(betas=(0.9, 1.2)), "two numbers in [0, 1)"),
        (lambda: TrainConfig(resume=True, overwrite=True), "exclude each other"),
        (lambda: ModelConfig(preset_overrides="{bad"), "not valid JSON"),
        (lambda: TrainConfig.from_dict({"optim": {"learning_rate": 1}}), "optim.learning_rate"),
    ],
)
def test_validation_names_the_bad_value(build, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        build()


def test_lora_auto_resolution() -> None:
    assert not ModelConfig().use_lora  # a preset from scratch trains fully
    assert ModelConfig(quantization="4bit").use_lora
    assert ModelConfig(vision_backbone="v", text_backbone="t").use_lora
    assert not ModelConfig(quantization="4bit", lora="off").use_lora


def test_flags_override_config_file(tmp_path: Path) -> None:
    TrainConfig(data=DataConfig(root="from/file", chunk_size=4), steps=50, batch_size=16).save(
        tmp_path / "c.yaml"
    )
    cfg = _parse(
        [
            "--config", str(tmp_path / "c.yaml"),
            "--steps", "7",
            "--optim.head-lr", "0.01",
            "--data.cameras", "front", "wrist",
            "--no-tensorboard",
            "--model.quantization", "4bit",
        ]
    )  # fmt: skip
    assert cfg.steps == 7 and cfg.batch_size == 16  # flag wins, file keeps the rest
    assert cfg.data.root == "from/file" and cfg.data.chunk_size == 4
    assert cfg.data.cameras == ("front", "wrist")
    assert cfg.optim.head_lr == 0.01 and cfg.tensorboard is False and cfg.model.quantization == "4bit"


def test_defaults_without_flags() -> None:
    assert _parse([]) == TrainConfig()


def test_cli_help_lists_sections(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fastvla", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # not the repo root, whose datasets/ folder would shadow Hugging Face's
    ).stdout
    for text in (
        "--data.root",
        "--optim.head-lr",
        "--model.quantization {none,4bit,8bit}",
        "--resume",
        "[default: 8]",
    ):
        assert text in out


def test_cli_save_config(tmp_path: Path) -> None:
    path = tmp_path / "saved.yaml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fastvla",
            "train",
            "--data.root",
            "x",
            "--steps",
            "9",
            "--save-config",
            str(path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert TrainConfig.load(path) == TrainConfig(data=DataConfig(root="x"), steps=9)
