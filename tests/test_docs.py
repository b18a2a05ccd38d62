"""Docs are tested: a command, setting, error code or event type missing from the docs fails."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import click

from artifactstore import errors
from artifactstore.cli.main import cli
from artifactstore.config import Settings
from artifactstore.model import events
from artifactstore.model.events import EVENT_CLASSES
from tests.model.test_events import SAMPLES

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command by its full name. The top-level group is lazy (its ``.commands``
    is empty): ask it through ``get_command``, as click does."""
    ctx = click.Context(group)
    found: dict[str, click.Command] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, prefix + name + " "))
    return found


def test_every_command_and_option_is_documented() -> None:
    text = _text("cli.md")
    commands = _commands(cli)
    assert {"push", "pull", "token create"} <= set(commands)
    for name in commands:
        assert f"`{name}" in text, f"command {name!r} is missing from docs/cli.md"
    for name, command in commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                longest = max(param.opts, key=len)
                assert longest in text, f"{name} {longest} is missing from docs/cli.md"


def test_every_setting_is_documented() -> None:
    text = _text("configuration.md")
    for field in dataclasses.fields(Settings):
        assert f"`{field.name}`" in text, f"setting {field.name} missing"
        assert f"`ARTIFACTSTORE_{field.name.upper()}`" in text


def test_every_error_code_is_documented() -> None:
    text = _text("errors.md")
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)]
    codes = {c.code for c in classes if issubclass(c, errors.ArtifactStoreError)}
    for code in codes:
        assert f"`{code}`" in text, f"error code {code} is missing from docs/errors.md"


def test_every_event_type_is_documented() -> None:
    """Each event class has its row in docs/events.md, naming every key of its payload."""
    rows = {
        m.group(1): line
        for line in _text("events.md").splitlines()
        if (m := re.match(r"\| `([a-z_]+\.[a-z_]+)` \|", line))
    }
    declared = {  # every event class in model/events.py, listed in the table or not
        kind: c.__name__
        for _, c in inspect.getmembers(events, inspect.isclass)
        if dataclasses.is_dataclass(c) and isinstance(kind := getattr(c, "type", None), str)
    }
    for kind, name in declared.items():
        assert kind in rows, f"event type {kind} is missing from docs/events.md"
        assert kind in EVENT_CLASSES, f"{name} is missing from EVENT_CLASSES"
    for kind, row in rows.items():
        assert kind in EVENT_CLASSES, f"docs/events.md documents {kind}, which no class is"
        for key in SAMPLES[kind].to_payload():
            assert f"`{key}`" in row, f"payload key {key} of {kind} is missing from its row"


def test_readme_quick_start() -> None:
    text = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    assert "make serve" in text and "make test" in text
