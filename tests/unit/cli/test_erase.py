"""``sophia-tasks erase``: an argument that is not an address stops before any store is touched."""
from __future__ import annotations

from click.testing import CliRunner

from sophia_tasks.cli.main import main


def test_something_that_is_not_an_address_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(main, ["erase", "--email", "erin at example.org"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: 'erin at example.org' is not an e-mail address: give one such as name@example.com"]


def test_the_address_is_required() -> None:
    result = CliRunner().invoke(main, ["erase", "--dry-run"])
    assert result.exit_code == 2 and "--email" in result.output
