"""``fastvla ros2`` command line: parsing, no heavy imports at parser-build time, clear missing-DDS error."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from fastvla.ros2 import cli

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


def test_parses_the_documented_command_line() -> None:
    args = parse(BRIEF)
    assert args.camera == [("front", "/camera/front/image_raw"), ("wrist", "/wrist/image_raw")]
    assert (args.rate, args.domain_id, args.command_type, args.max_staleness) == (
        10.0,
        7,
        "joint_trajectory",
        0.3,
    )
    assert args.network == "loopback" and args.instruction_topic == "~/instruction"
    assert args.func is cli.run


def test_bad_camera_spec_names_the_fix(capsys) -> None:
    with pytest.raises(SystemExit):
        parse(["--camera", "front/camera"])
    assert "must be NAME:=TOPIC, e.g. front:=/camera/front/image_raw" in capsys.readouterr().err


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
    with pytest.raises(SystemExit, match=r"pip install 'fastvla\[ros2\]'"):
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
    with pytest.raises(SystemExit, match="no such directory"):
        cli.load_policy("/nonexistent/policy_dir", ["front"], "x", None)


def test_bad_values_exit_with_a_message_not_a_traceback() -> None:
    with pytest.raises(SystemExit, match=r"fastvla ros2: rate 0.0 Hz must be > 0"):
        cli.run(parse([*BRIEF, "--rate", "0"]))
    with pytest.raises(SystemExit, match=r"--domain-id 300 out of range; ROS 2 uses 0-232"):
        cli.run(parse([*BRIEF, "--domain-id", "300"]))
    with pytest.raises(SystemExit, match=r"token '2nd'"):
        cli.run(parse([*BRIEF, "--command", "/arm/2nd"]))


def test_ros_distro_choices_match_graph_layouts() -> None:
    from fastvla.ros2.graph import GID_SIZES

    assert set(cli.GID_DISTROS) == set(GID_SIZES)
    assert parse(BRIEF).ros_distro in GID_SIZES
    assert parse([*BRIEF, "--ros-distro", "humble"]).ros_distro == "humble"


def test_network_modes_set_or_keep_cyclonedds_uri(monkeypatch) -> None:
    from fastvla.ros2.dds import configure_network

    monkeypatch.setenv("CYCLONEDDS_URI", "file:///etc/my_robot_lan.xml")
    configure_network("env")  # the user's own config (e.g. to reach a robot on the LAN) is left alone
    assert cli.os.environ["CYCLONEDDS_URI"] == "file:///etc/my_robot_lan.xml"
    configure_network("loopback")
    assert "<AllowMulticast>false</AllowMulticast>" in cli.os.environ["CYCLONEDDS_URI"]
    with pytest.raises(ValueError, match="network 'lan' not supported"):
        configure_network("lan")


def test_transport_and_action_flags() -> None:
    args = parse([*BRIEF, "--transport", "rclpy", "--action-server"])
    assert args.transport == "rclpy" and args.action_server
    assert parse(BRIEF).transport == "auto" and not parse(BRIEF).action_server
    assert cli.resolve_transport("cyclone") == "cyclone"
    assert cli.resolve_transport("auto") in ("rclpy", "cyclone")


def test_actions_need_the_rclpy_transport() -> None:
    args = parse([*BRIEF, "--transport", "cyclone", "--command-type", "follow_joint_trajectory"])
    with pytest.raises(SystemExit, match="need the rclpy transport"):
        cli.run(args)
