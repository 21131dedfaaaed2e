"""Every ``--help`` of the command tree reads as written: no text lost to rich's markup parser."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from producer.cli import app
from tests.unit.test_cli import run

BRACKETED = re.compile(r"\[[^\[\]]+\]")
"""``[default: all cores]`` and the like: what rich took for a style tag and dropped."""
ARTEFACT = re.compile(r"\s[.,;](\s|$)")
"""What is left where a bracketed text was dropped: ``Processes for embedded mode .``."""


def command_paths(command, path=()):
    """Every command and subcommand of the tree as its argument path: (), ("submit",), ("models", "show"), ..."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


def as_written(text: str | None) -> str:
    """A help text as its author wrote it (a ``\\[`` escape undone)."""
    return (text or "").replace("\\[", "[")


def flat(text: str) -> str:
    """Rendered help without the panels' box drawing, whitespace collapsed (lines wrap anywhere)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


PATHS = [p for p, _ in command_paths(typer.main.get_command(app))]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ser-batch")
def test_every_help_text_is_printed_as_written(path):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    texts = [as_written(command.help)] + [as_written(getattr(p, "help", None)) for p in command.params]
    promised = [" ".join(m.split()) for t in texts for m in BRACKETED.findall(t)]
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    shown = flat(r.output)
    for text in promised:
        assert text in shown, f"{' '.join(path)} --help lost {text!r}"
    assert not ARTEFACT.search(shown), f"{' '.join(path)} --help: {ARTEFACT.search(shown).group()!r} in {shown}"


def test_the_reported_defaults_are_shown(tmp_path):
    """The texts issue 32 found cut, through the installed entry point."""
    expected = {
        ("submit",): ["Processes for embedded mode [default: all cores].", "Files per unit of work [default:"],
        ("evaluate",): ["Model version [default: the active one]."],
        ("rescore",): ["Model version [default: the active one]."],
        ("models", "show"): ["Model version, or default / fast [default: the active one]."],
        ("train",): [
            "Bundle file to write [default: in SER_MODEL_DIR].",
            "Folder for metrics.json and the plots [default: next to the bundle].",
            "e.g. csv=3 [default: 1].",
        ],
    }
    for path, texts in expected.items():
        p = run([*path, "--help"], tmp_path / "x.db")
        assert p.returncode == 0, p.stderr
        shown = flat(p.stdout)
        for text in texts:
            assert text in shown, f"{' '.join(path)} --help: {text!r} not in {shown}"


def test_readme_exit_code_table_names_every_exit_code():
    """README's exit-code table and the codes the CLI and the worker exit with are the same set."""
    from producer.common import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
    from tests.conftest import REPO
    from worker.celery_app.watchdog import EXIT_STALLED

    readme = (REPO / "README.md").read_text()
    table = readme.split("**Exit codes**", 1)[1].split("\n\n", 2)[1]
    codes = {int(m) for m in re.findall(r"^\| `(\d+)` \|", table, flags=re.M)}
    assert codes == {EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_SOME_FAILED, 130, EXIT_STALLED}
