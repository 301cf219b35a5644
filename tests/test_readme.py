"""README.md says what the code does: its configuration table is the settings object's
fields, each with its own default, environment variable and flags."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from gnosync.cli import main
from gnosync.observe.http import DEFAULT_ADDRESS
from gnosync.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
MIB = 1024 * 1024

# Defaults the table gives in words: these settings default to None in the code, and
# what that means is decided where they are used.
IN_WORDS = {
    "source": "—",  # none: a source must be given
    "db": "embedded",  # gnosync.store.embedded
    "start_height": "lowest served",
    "data_dir": "user data dir",  # gnosync.store.embedded
    "http": f"`{DEFAULT_ADDRESS}`",  # gnosync.observe.http
}


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def table_rows(body: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``body``, as header -> cell."""
    lines = [line for line in body.splitlines() if line.startswith("|")]
    assert len(lines) > 2, "no table"
    cells = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    header, _, *rows = cells
    for row in rows:
        assert len(row) == len(header), f"row {row} does not have the {len(header)} cells of {header}"
    return [dict(zip(header, row)) for row in rows]


def configuration_table() -> dict[str, dict[str, str]]:
    """The README's configuration table by setting name."""
    rows = table_rows(section(README.read_text(), "Configuration"))
    names = [row["setting"].strip("`") for row in rows]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    assert not duplicated, f"README.md's configuration table lists {duplicated} more than once"
    return dict(zip(names, rows))


def rendered_default(name: str) -> str:
    """A setting's default as the table gives it."""
    default = Settings.model_fields[name].default
    if name in IN_WORDS:
        assert default is None, f"{name} defaults to {default!r}: the table should say so, not {IN_WORDS[name]!r}"
        return IN_WORDS[name]
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, int) and name.endswith("_bytes") and default % MIB == 0:
        return f"{default // MIB} MiB"
    if isinstance(default, (int, float)):
        return repr(default)
    if isinstance(default, str):
        return f"`{default}`"
    raise AssertionError(f"{name} defaults to {default!r}: add how the table renders it to IN_WORDS")


def same_default(cell: str, expected: str) -> bool:
    """Numbers compare by value (``30`` and ``30.0``, ``10000`` and ``10,000``)."""
    try:
        return float(cell.replace(",", "")) == float(expected)
    except ValueError:
        return cell == expected


def cli_flags(group: click.Group = main) -> dict[str, set[str]]:
    """Every flag of every gnosync command (subcommands too) that sets a setting, by
    setting name."""
    flags: dict[str, set[str]] = {}
    for command in group.commands.values():
        if isinstance(command, click.Group):
            for name, opts in cli_flags(command).items():
                flags.setdefault(name, set()).update(opts)
        for param in command.params:
            if isinstance(param, click.Option) and param.name in Settings.model_fields:
                flags.setdefault(param.name, set()).update(param.opts + param.secondary_opts)
    return flags


def test_every_setting_has_one_row_and_every_row_is_a_setting():
    table = configuration_table()
    fields = set(Settings.model_fields)
    assert sorted(fields - set(table)) == [], "settings without a row in README.md's configuration table"
    assert sorted(set(table) - fields) == [], "rows of README.md's configuration table that are not settings"
    assert set(IN_WORDS) <= fields, "IN_WORDS names settings that are gone"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_table_gives_the_default_of(name):
    row = configuration_table().get(name)
    if row is None:
        pytest.fail(f"{name} has no row in README.md's configuration table")
    expected = rendered_default(name)
    assert same_default(row["default"], expected), (
        f"README.md says {name} defaults to {row['default']}; the code says {expected}")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_the_table_names_the_variable_and_flags_of(name):
    row = configuration_table().get(name)
    if row is None:
        pytest.fail(f"{name} has no row in README.md's configuration table")
    assert re.findall(r"`(GNOSYNC_\w+)`", row["environment"]) == [f"GNOSYNC_{name.upper()}"]
    listed = set(re.findall(r"--[a-z][a-z-]*", row["flag"]))
    assert listed == cli_flags().get(name, set()), (
        f"README.md gives {name} the flags {sorted(listed) or '—'}; gnosync's commands have"
        f" {sorted(cli_flags().get(name, set())) or 'none'}")
