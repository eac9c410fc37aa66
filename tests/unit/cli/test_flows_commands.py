"""`sophia-tasks flows list --prefix` (like `flowctl catalog list --prefix`) and the plan/apply options."""
from __future__ import annotations

import json

from click.testing import CliRunner

from sophia_tasks.cli.main import main
from sophia_tasks.settings import DEFAULT_FLOW


def test_list_prefix_keeps_the_names_that_start_with_it() -> None:
    out = CliRunner().invoke(main, ["flows", "list", "--prefix", "gong_calls_", "--json"],
                             env={"SOPHIA_FLOW": str(DEFAULT_FLOW)})
    assert out.exit_code == 0, out.output
    assert [r["name"] for r in json.loads(out.output)] == ["gong_calls_enriched"]
    everything = CliRunner().invoke(main, ["flows", "list", "--json"], env={"SOPHIA_FLOW": str(DEFAULT_FLOW)})
    assert len(json.loads(everything.output)) > 1


def test_list_prefix_that_matches_nothing_prints_no_rows() -> None:
    out = CliRunner().invoke(main, ["flows", "list", "--prefix", "nothing_", "--json"],
                             env={"SOPHIA_FLOW": str(DEFAULT_FLOW)})
    assert out.exit_code == 0 and json.loads(out.output) == []


def test_plan_and_apply_document_their_exit_codes_and_options() -> None:
    plan = CliRunner().invoke(main, ["flows", "plan", "--help"])
    text = " ".join(plan.output.split())
    assert plan.exit_code == 0 and "Exit 0 when there is nothing to do, 2 when there are changes" in text
    apply = CliRunner().invoke(main, ["flows", "apply", "--help"])
    assert "--dry-run" in apply.output and "--forget" in apply.output


def test_plan_of_a_bad_spec_exits_1_with_its_problems(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "flow.yaml"
    bad.write_text("collections: {}\n")
    out = CliRunner().invoke(main, ["flows", "plan", str(bad)])
    assert out.exit_code == 1 and "problem(s) in the flow spec" in out.output
