"""The `haven` command as a whole: help everywhere, one-line usage errors, and the main job."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from haven.cli.main import build_parser, main


def _all_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(_all_commands(sub, (*prefix, name)))
    return found


COMMANDS = _all_commands(build_parser())


def test_the_expected_commands_exist() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("keygen", "build", "measure", "demo", "sim quote", "sim root-ca", "sim platform",
                     "attest verify", "attest token verify"):
        assert expected in names


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: haven" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [[], ["no-such-command"], ["build"], ["measure", "a", "b"], ["sim"], ["keygen", "--bogus"]],
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("haven: error: ")
    assert "Traceback" not in err


def test_demo_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "TCB status  UpToDate" in out
    assert "EAR status  warning" in out
    assert "app says    Hello from inside a Haven enclave!" in out
    assert "Round trip verified" in out
    for name in ("hello.bundle", "hello.quote", "policy.json", "sim-root-ca.der", "signing-key.pem"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "collateral" / "tcbInfo.json").is_file()


def test_installed_command_runs_as_a_process() -> None:
    exe = Path(sys.executable).parent / "haven"
    if not exe.exists():
        pytest.skip("the haven console script is not installed in this environment")
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith("haven ")
