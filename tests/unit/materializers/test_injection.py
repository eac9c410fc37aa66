"""Flow-spec names reach SQL and Redis as identifiers and key prefixes, so the spec loader must
refuse any that could carry SQL, spaces or protocol bytes; `flows validate` exits 1 on them.

Document *values* never become identifiers (they are bound parameters); that is checked end to
end in tests/integration/test_security.py.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from click.testing import CliRunner

from sophia_tasks.core.flowspec import Binding, FlowSpecError
from sophia_tasks.flows import parse_spec
from sophia_tasks.materializers.postgres import PostgresMaterializer
from sophia_tasks.materializers.redis import RedisMaterializer
from sophia_tasks.materializers.snowflake import SnowflakeMaterializer, quote_ident
from sophia_tasks.settings import DEFAULT_FLOW, Settings

SQL_NAMES = [
    "name\n",
    "gong_calls_enriched; DROP TABLE gong_calls_enriched; --",
    "gong_calls_enriched;DROP",
    "x'--",
    'x"; DROP TABLE y; --',
    "x$$",
    "gong calls",
    "tab\tname",
    "new\nline",
    "a-b",
    "a.b",
    "public.gong_calls_enriched",
    "(select 1)",
    "1st_table",
    "",
    "ü_name",
    "x" * 64,
]
SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_FLOW.read_text())


def spec_with(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED)
    change(data)
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(FlowSpecError) as info:
        parse_spec(data, "flows/injected.yaml", check_imports=False)
    return info.value.problems


def resource(data: dict[str, Any], materialization: str) -> dict[str, Any]:
    return data["materializations"][materialization]["bindings"][0]["resource"]


def test_the_shipped_spec_passes() -> None:
    """The baseline the mutations below start from is valid, so each refusal is the mutation's."""
    assert parse_spec(copy.deepcopy(SHIPPED), check_imports=False).materializations


@pytest.mark.parametrize("name", SQL_NAMES)
@pytest.mark.parametrize("materialization", ["postgres", "snowflake"])
def test_table_names_with_sql_or_spaces_are_rejected(materialization: str, name: str) -> None:
    found = problems_of(spec_with(lambda d: resource(d, materialization).update(table=name)))
    assert any(p.startswith(f"materializations.{materialization}.bindings[0].resource.table") for p in found), found


@pytest.mark.parametrize("name", SQL_NAMES)
@pytest.mark.parametrize("materialization", ["postgres", "snowflake"])
def test_key_column_names_with_sql_or_spaces_are_rejected(materialization: str, name: str) -> None:
    found = problems_of(spec_with(lambda d: resource(d, materialization).update(key_column=name)))
    assert any(".resource.key_column" in p for p in found), found


@pytest.mark.parametrize("name", SQL_NAMES)
@pytest.mark.parametrize("materialization", ["postgres", "snowflake"])
def test_projection_column_names_with_sql_or_spaces_are_rejected(materialization: str, name: str) -> None:
    found = problems_of(spec_with(lambda d: resource(d, materialization)["projections"].update(
        {name: {"from": "/metaData/title", "type": "string"}})))
    assert any(".resource.projections." in p and "column name" in p for p in found), found


@pytest.mark.parametrize("ptype", ["text; DROP TABLE x", "varchar(10)", "string ", "jsonb"])
def test_projection_types_are_a_closed_list(ptype: str) -> None:
    """The column type is spliced into DDL as SQL: only the six known names are allowed."""
    found = problems_of(spec_with(lambda d: resource(d, "postgres")["projections"].update(
        title={"from": "/metaData/title", "type": ptype})))
    assert any("projections.title.type: must be one of" in p for p in found), found


@pytest.mark.parametrize("prefix", [
    "sophia:x; FLUSHALL",
    "sophia: DROP TABLE gong_calls_enriched; --",
    "sophia:\r\nFLUSHALL\r\n",
    "\r\n*1\r\n$8\r\nFLUSHALL\r\n",
    "sophia:\t",
    "sophia:\x0b",
    "",
    42,
])
def test_key_prefixes_with_spaces_or_protocol_bytes_are_rejected(prefix: Any) -> None:
    found = problems_of(spec_with(lambda d: resource(d, "redis").update(key_prefix=prefix)))
    assert any(p.startswith("materializations.redis.bindings[0].resource.key_prefix") for p in found), found


@pytest.mark.parametrize("section", ["collections", "derivations", "materializations"])
@pytest.mark.parametrize("name", ["x; DROP TABLE y", "Gong_Calls", "a b", "x'--", "x*"])
def test_collection_derivation_and_materialization_names_are_plain(section: str, name: str) -> None:
    """These names become Redis key prefixes, queue names and metric labels."""
    def rename(data: dict[str, Any]) -> None:
        first = next(iter(data[section]))
        data[section][name] = data[section].pop(first)

    found = problems_of(spec_with(rename))
    assert any(p.startswith(f"{section}.{name}: name must be") for p in found), found


def test_flows_validate_exits_1_and_names_every_injected_field(tmp_path: Path) -> None:
    from sophia_tasks.cli.main import main

    def inject(data: dict[str, Any]) -> None:
        resource(data, "postgres").update(table="t; DROP TABLE gong_calls_enriched; --")
        resource(data, "snowflake")["projections"]["X\"; DROP TABLE Y; --"] = {"from": "/a", "type": "string"}
        resource(data, "redis").update(key_prefix="sophia:\r\nFLUSHALL\r\n")

    path = tmp_path / "injected.yaml"
    path.write_text(yaml.safe_dump(spec_with(inject)))
    result = CliRunner().invoke(main, ["flows", "validate", str(path)])
    assert result.exit_code == 1
    assert "materializations.postgres.bindings[0].resource.table" in result.output
    assert "materializations.snowflake.bindings[0].resource.projections." in result.output
    assert "materializations.redis.bindings[0].resource.key_prefix" in result.output


# --------------------------------------------------------------------------- identifiers are quoted anyway


def test_identifiers_are_always_quoted_in_generated_sql() -> None:
    """Defence in depth: even a name the loader let through would stay one quoted identifier."""
    assert quote_ident('a"; DROP TABLE x; --') == '"a""; DROP TABLE x; --"'
    spec = parse_spec(copy.deepcopy(SHIPPED), check_imports=False)
    settings = Settings()
    sf_binding = spec.materializations["snowflake"].bindings[0]
    merge = SnowflakeMaterializer(settings, spec).merge_statement(sf_binding)
    assert 'MERGE INTO "GONG_CALLS_ENRICHED"' in merge and "PARSE_JSON(?)" in merge
    pg = PostgresMaterializer(settings, spec)
    upsert = pg._upsert_statement(spec.materializations["postgres"].bindings[0])
    assert "%s" in repr(upsert) and "Identifier('gong_calls_enriched')" in repr(upsert)


def test_redis_keys_are_the_prefix_and_the_key_literally() -> None:
    """Keys are written and read by exact name (SET/GET through a script's KEYS), never by
    pattern, so glob or quote characters in a prefix or a key reach no other key."""
    spec = parse_spec(copy.deepcopy(SHIPPED), check_imports=False)
    mat = RedisMaterializer(Settings(), spec)
    try:
        glob = Binding(source="gong_calls_enriched", resource={"key_prefix": "sophia:*?[a]\\:"})
        assert mat.key(glob, "123") == "sophia:*?[a]\\:123"
        shipped = spec.materializations["redis"].bindings[0]
        assert mat.key(shipped, "*") == "sophia:gong_calls_enriched:*"
    finally:
        mat.close()
