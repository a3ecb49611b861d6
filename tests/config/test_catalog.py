"""The agent catalog file: bundled agents, validation messages, reloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from chorus.config.catalog import CatalogError, load_catalog, parse_catalog
from chorus.config.settings import BUNDLED_AGENTS_FILE


def test_bundled_catalog_has_the_domain_agents():
    catalog = load_catalog(BUNDLED_AGENTS_FILE)
    for name in ("analyst", "summarizer", "writer", "critic", "log_analyst", "aggregator"):
        assert name in catalog
        assert str(catalog[name].providers[-1]) == "local:smollm2"
    schema = catalog["triage"].output_schema
    assert schema is not None and schema["type"] == "object"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agents: [{name: a, instructions: x, providers: [gpt4]}]", "must read 'provider:model'"),
        (
            "agents: [{name: a, instructions: x, providers: [Azure_1:gpt]}]",
            "'Azure_1' in 'Azure_1:gpt' is not a provider name",
        ),
        ("agents: [{name: A!, instructions: x, providers: [local:m]}]", "agent 'A!': name"),
        (
            "agents: [{name: a, instructions: x, providers: [local:m], temperature: 3}]",
            "temperature: Input should be less than or equal to 2",
        ),
        ("agents: [{name: a, instructions: x, providers: [local:m], colour: red}]", "colour"),
        (
            "agents: [{name: a, instructions: x, providers: [local:m]},"
            " {name: a, instructions: y, providers: [local:m]}]",
            "defined twice",
        ),
        (
            "agents: [{name: a, instructions: x, providers: [local:m],"
            " output_schema: {type: array}}]",
            '"type": "object"',
        ),
        ("agents: {", "not valid YAML"),
        ("nothing: here", "top-level 'agents:' list"),
    ],
)
def test_catalog_errors_name_the_problem(text, message):
    with pytest.raises(CatalogError, match=None) as err:
        parse_catalog(text, source="x.yaml")
    assert message in str(err.value)
    assert "x.yaml" in str(err.value)


def test_catalog_missing_file(tmp_path: Path):
    with pytest.raises(CatalogError, match="cannot read it"):
        load_catalog(tmp_path / "missing.yaml")


def test_catalog_reload_on_change(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text("agents: [{name: a, instructions: one, providers: [local:m]}]")
    assert load_catalog(path)["a"].instructions == "one"
    path.write_text("agents: [{name: a, instructions: two!, providers: [local:m], version: 2}]")
    assert load_catalog(path)["a"].version == 2
