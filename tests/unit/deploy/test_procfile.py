"""The Procfile's flower line: its password from FLOWER_BASIC_AUTH or FLOWER_BASIC_AUTH_FILE, never argv."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def flower_command() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("flower:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no flower process in the Procfile")


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The line under sh, with `celery` replaced by a stub that prints its argv and the password it got."""
    stub = tmp_path / "bin" / "celery"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\necho "argv: $*"\necho "auth: $FLOWER_BASIC_AUTH"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{stub.parent}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", flower_command()], env={**base, **env}, capture_output=True, text=True,
                          timeout=30)


def test_the_password_comes_from_the_environment_not_argv(tmp_path: Path) -> None:
    done = run(tmp_path, FLOWER_BASIC_AUTH="ops:pw-123")
    assert done.returncode == 0, done.stderr
    assert "auth: ops:pw-123" in done.stdout and "pw-123" not in done.stdout.split("auth:")[0]


def test_the_password_file_form(tmp_path: Path) -> None:
    secret = tmp_path / "flower"
    secret.write_text("ops:pw-from-file\n")
    done = run(tmp_path, FLOWER_BASIC_AUTH_FILE=str(secret))
    assert done.returncode == 0, done.stderr
    assert "auth: ops:pw-from-file\n" in done.stdout and "pw-from-file" not in done.stdout.split("auth:")[0]


def test_both_forms_or_neither_stop_the_start(tmp_path: Path) -> None:
    secret = tmp_path / "flower"
    secret.write_text("ops:pw\n")
    both = run(tmp_path, FLOWER_BASIC_AUTH="ops:pw", FLOWER_BASIC_AUTH_FILE=str(secret))
    assert both.returncode == 1 and "both set" in both.stderr and "argv" not in both.stdout
    neither = run(tmp_path)
    assert neither.returncode == 1 and "set FLOWER_BASIC_AUTH" in neither.stderr and "argv" not in neither.stdout
