"""The README stays true to the code: every setting and CLI command is documented."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cli import build_parser
from orchestrator.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for name in Settings.model_fields:
        assert f"`ORCHESTRATOR_{name.upper()}`" in README, name


def test_every_cli_command_is_in_the_reference() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in commands:
        assert f"orchestrator {command}" in README, command
