"""``fastvla ros2`` command line: flags generated from Ros2Config/BridgeConfig (old spellings kept),
``--config``/``--print-config``, no heavy imports at parser-build time, clear missing-DDS error."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastvla import cli as fastvla_cli
from fastvla.errors import UserError
from fastvla.ros2 import cli
from fastvla.ros2.config import Ros2Config
from fastvla.utils.flags import config_from_args

BRIEF = [
    "--policy", "fastvla.ros2.testing:FrameEchoPolicy",
    "--camera", "front:=/camera/front/image_raw", "--camera", "wrist:=/wrist/image_raw",
    "--state", "/joint_states", "--command", "/arm_controller/commands",
    "--instruction", "pick up the red cube", "--rate", "10", "--domain-id", "7",
    "--command-type", "joint_trajectory", "--max-staleness", "0.3",
]  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["ros2", *argv])


def config(argv: list[str]) -> Ros2Config:
    return config_from_args(parse(argv), Ros2Config)


def test_parses_the_documented_command_line() -> None:
    cfg = config(BRIEF)
    bridge = cfg.bridge
    assert bridge.cameras == {"front": "/camera/front/image_raw", "wrist": "/wrist/image_raw"}
    assert (bridge.rate, cfg.domain_id, bridge.command_type, bridge.max_staleness) == (
        10.0,
        7,
        "joint_trajectory",
        0.3,
    )
    assert (bridge.state_topic, bridge.command_topic) == ("/joint_states", "/arm_controller/commands")
    assert cfg.network == "loopback" and bridge.instruction_topic == "/fastvla_bridge/instruction"
    assert (
        cfg.policy == "fastvla.ros2.testing:FrameEchoPolicy" and bridge.instruction == "pick up the red cube"
    )
    assert parse(BRIEF).func is cli.run


def test_new_flag_names_and_list_forms() -> None:
    cfg = config(
        ["--policy", "p", "--cameras", "front:=/a,wrist=/b", "--state-topic", "/js",
         "--command-topic", "/cmd", "--joint-names", "j1,j2", "--no-check-stamps", "--chunk-dt", "0.05"]
    )  # fmt: skip
    bridge = cfg.bridge
    assert bridge.cameras == {"front": "/a", "wrist": "/b"} and bridge.joint_names == ("j1", "j2")
    assert (bridge.state_topic, bridge.command_topic, bridge.check_stamps, bridge.chunk_dt) == (
        "/js",
        "/cmd",
        False,
        0.05,
    )
    # Repeated flags add cameras; a JSON object works too.
    cfg = config(["--policy", "p", "--camera", "front:=/a", "--camera", '{"wrist": "/b"}'])
    assert cfg.bridge.cameras == {"front": "/a", "wrist": "/b"}


def test_bad_camera_spec_names_the_fix(capsys) -> None:
    with pytest.raises(SystemExit):
        parse(["--camera", "front/camera"])
    err = capsys.readouterr().err
    assert "--cameras/--camera: 'front/camera' must be NAME:=TOPIC" in err


def test_missing_policy_or_camera_names_the_flag(capsys) -> None:
    with pytest.raises(ValueError, match="--policy is required"):
        cli.run(parse(["--camera", "front:=/a"]))
    with pytest.raises(ValueError, match="--cameras is required"):
        cli.run(parse(["--policy", "p"]))
    # Through the `fastvla` entry point: one line naming the flag, exit status 2 like every command.
    assert fastvla_cli.main(["ros2", "--policy", "p"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastvla ros2: error:") and "--cameras is required" in err[0]


def test_print_config_round_trips_through_a_config_file(tmp_path: Path, capsys) -> None:
    assert cli.run(parse([*BRIEF, "--print-config"])) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["bridge"]["cameras"]["wrist"] == "/wrist/image_raw" and printed["domain_id"] == 7
    path = tmp_path / "ros2.json"
    path.write_text(json.dumps(printed))
    assert config(["--config", str(path)]).to_dict() == printed
    overridden = config(["--config", str(path), "--rate", "5", "--camera", "top:=/top"])
    assert overridden.bridge.rate == 5.0 and overridden.bridge.cameras == {"top": "/top"}
    assert overridden.bridge.command_type == "joint_trajectory"  # the rest still from the file
    saved = tmp_path / "saved.yaml"
    assert cli.run(parse([*BRIEF, "--save-config", str(saved)])) == 0
    assert Ros2Config.load(saved).to_dict() == printed


def test_domain_id_and_distro_default_to_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ROS_DOMAIN_ID", "12")
    monkeypatch.setenv("ROS_DISTRO", "humble")
    cfg = config(["--policy", "p", "--camera", "front:=/a"])
    assert cfg.domain_id is None and cfg.resolved_domain_id() == 12
    assert cfg.resolved_ros_distro() == "humble"
    monkeypatch.setenv("ROS_DISTRO", "rolling")  # no known discovery layout: the default
    monkeypatch.setenv("ROS_DOMAIN_ID", "")
    assert cfg.resolved_ros_distro() == "jazzy" and cfg.resolved_domain_id() == 0
    monkeypatch.setenv("ROS_DOMAIN_ID", "400")
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID='400'"):
        cfg.resolved_domain_id()


def test_parser_build_imports_neither_dds_nor_torch() -> None:
    code = (
        "import argparse, sys\n"
        "from fastvla.ros2 import cli\n"
        "cli.add_parser(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('cyclonedds', 'torch', 'rosbags', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_dds_package_says_how_to_install(monkeypatch) -> None:
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(
        cli.importlib.util, "find_spec", lambda n, *a: None if n == "cyclonedds" else real(n, *a)
    )
    with pytest.raises(UserError, match=r"pip install 'fastvla\[ros2\]'"):
        cli.run(parse(BRIEF))


def test_print_dds_config_is_loopback_only(capsys) -> None:
    assert cli.run(parse(["--print-dds-config"])) == 0
    xml = capsys.readouterr().out
    assert '<NetworkInterface address="127.0.0.1"' in xml
    assert "<AllowMulticast>false</AllowMulticast>" in xml
    assert '<Peer address="127.0.0.1"/>' in xml


def test_load_policy_from_factory_and_bad_path() -> None:
    policy = cli.load_policy("fastvla.ros2.testing:FrameEchoPolicy", ["front"], "x", None)
    assert hasattr(policy, "select_action") and hasattr(policy, "predict_action_chunk")
    with pytest.raises(UserError, match="no such directory"):
        cli.load_policy("/nonexistent/policy_dir", ["front"], "x", None)


def test_bad_values_raise_errors_that_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"rate 0.0 Hz must be > 0"):
        cli.run(parse([*BRIEF, "--rate", "0"]))
    with pytest.raises(ValueError, match=r"--domain-id 300 out of range; ROS 2 uses 0-232"):
        cli.run(parse([*BRIEF, "--domain-id", "300"]))
    with pytest.raises(ValueError, match=r"token '2nd'"):
        cli.run(parse([*BRIEF, "--command", "/arm/2nd"]))


def test_ros_distro_choices_match_graph_layouts() -> None:
    from fastvla.ros2.graph import GID_SIZES

    assert set(cli.GID_DISTROS) == set(GID_SIZES)
    assert config(BRIEF).resolved_ros_distro() in GID_SIZES
    assert config([*BRIEF, "--ros-distro", "humble"]).resolved_ros_distro() == "humble"
    assert config([*BRIEF, "--ros-distro", "none"]).resolved_ros_distro() == "none"


def test_network_modes_set_or_keep_cyclonedds_uri(monkeypatch) -> None:
    from fastvla.ros2.dds import configure_network

    monkeypatch.setenv("CYCLONEDDS_URI", "file:///etc/my_robot_lan.xml")
    configure_network("env")  # the user's own config (e.g. to reach a robot on the LAN) is left alone
    assert os.environ["CYCLONEDDS_URI"] == "file:///etc/my_robot_lan.xml"
    configure_network("loopback")
    assert "<AllowMulticast>false</AllowMulticast>" in os.environ["CYCLONEDDS_URI"]
    with pytest.raises(ValueError, match="network 'lan' not supported"):
        configure_network("lan")


def test_transport_and_action_flags() -> None:
    cfg = config([*BRIEF, "--transport", "rclpy", "--action-server"])
    assert cfg.transport == "rclpy" and cfg.bridge.action_server
    assert config(BRIEF).transport == "auto" and not config(BRIEF).bridge.action_server
    assert cli.resolve_transport("cyclone") == "cyclone"
    assert cli.resolve_transport("auto") in ("rclpy", "cyclone")


def test_actions_need_the_rclpy_transport() -> None:
    args = parse([*BRIEF, "--transport", "cyclone", "--command-type", "follow_joint_trajectory"])
    with pytest.raises(ValueError, match="need the rclpy transport"):
        cli.run(args)
