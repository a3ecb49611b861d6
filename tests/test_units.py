"""Pure functions: catalog validation, plan parsing, prices, prompt fitting, retry hints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from activities.llm import parse_retry_after
from activities.prompts import build_prompt, estimate_tokens
from chorus.config.catalog import CatalogError, load_catalog, parse_catalog
from chorus.config.settings import BUNDLED_AGENTS_FILE
from chorus.contracts.models import LLMRequest, ParallelStep, PriorOutput, SequentialStep
from chorus.governance.pricing import PRICE_DATA_VERSION, context_window, cost_usd, is_priced
from starter.plan import load_plan, parse_agents
from starter.sdk import ChorusInputError, make_workflow_id


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
        ("agents: [{name: a, instructions: x, providers: [azure:gpt]}]", "'azure' in 'azure:gpt'"),
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


def test_parse_agents_groups():
    steps = parse_agents("analyst, summarizer|critic ,writer", "sequential", "aggregator")
    assert isinstance(steps[1], ParallelStep)
    assert [getattr(b, "agent", None) for b in steps[1].branches] == ["summarizer", "critic"]
    steps = parse_agents("analyst>writer,critic", "parallel", "aggregator")
    assert isinstance(steps[0], SequentialStep)
    with pytest.raises(ChorusInputError, match="empty item"):
        parse_agents("a,,b", "sequential", None)
    with pytest.raises(ChorusInputError, match="invalid step 'Bad Name'"):
        parse_agents("Bad Name", "sequential", None)


def test_load_plan_nested(tmp_path: Path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "pattern: parallel\naggregator: aggregator\nmin_successes: 2\nsteps:\n"
        "  - analyst\n"
        "  - {kind: sequential, steps: [summarizer,\n"
        "                               {kind: parallel, branches: [critic, writer]}]}\n"
    )
    plan = load_plan(path)
    assert plan.pattern == "parallel" and plan.min_successes == 2
    inner = plan.steps[1]
    assert isinstance(inner, SequentialStep) and isinstance(inner.steps[1], ParallelStep)
    path.write_text("pattern: parallel\nsteps: [{kind: sequential, steps: []}]\n")
    with pytest.raises(ChorusInputError, match="steps\\[0\\]"):
        load_plan(path)


def test_prices_match_dated_snapshots_and_local_is_free():
    assert cost_usd("openai", "gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == (0.75, True)
    assert cost_usd("local", "anything", 10**6, 10**6) == (0.0, True)
    assert cost_usd("openai", "mystery-model", 10, 10) == (0.0, False)
    assert cost_usd("anthropic", "claude-haiku-4-5-20251001", 10**6, 10**6) == cost_usd(
        "anthropic", "claude-haiku-4-5", 10**6, 10**6
    )
    assert context_window("anthropic", "claude-sonnet-4-5", 8192) == 200_000
    assert context_window("local", "smollm2", 8192) == 8192


def test_prices_file_overrides(tmp_path: Path, monkeypatch):
    prices = tmp_path / "prices.yaml"
    prices.write_text("openai:\n  my-finetune: {input: 2.0, output: 4.0}\n")
    monkeypatch.setenv("CHORUS_PRICES_FILE", str(prices))
    assert cost_usd("openai", "my-finetune", 500_000, 250_000) == (2.0, True)
    prices.write_text("openai:\n  my-finetune: {input: 2.0, outptu: 4.0}\n")
    from chorus.governance.pricing import _load_overrides

    _load_overrides.cache_clear()
    with pytest.raises(ValueError, match="my-finetune: needs input and output"):
        cost_usd("openai", "my-finetune", 1, 1)


def test_genai_prices_models_and_cached_tokens():
    """Issue 13: gpt-5, gpt-5-mini, o4-mini, claude-opus-4-1 cost $0 and bypassed budgets."""
    from genai_prices import Usage, calc_price

    for provider, model in [
        ("openai", "gpt-5"),
        ("openai", "gpt-5-mini"),
        ("openai", "o4-mini"),
        ("anthropic", "claude-opus-4-1"),
    ]:
        cost, known = cost_usd(provider, model, 1000, 100)
        assert known and cost > 0 and is_priced(provider, model), model
    assert not is_priced("openai", "mystery-model") and is_priced("local", "anything")
    plain, _ = cost_usd("openai", "gpt-4o-mini", 10_000, 100)
    cached, _ = cost_usd("openai", "gpt-4o-mini", 10_000, 100, cached_input_tokens=8_000)
    expected = calc_price(
        Usage(input_tokens=10_000, output_tokens=100, cache_read_tokens=8_000),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    assert cached < plain and cached == float(expected)
    assert PRICE_DATA_VERSION.startswith("genai-prices ")
    assert context_window("openai", "gpt-5-mini", 1) == 400_000


def _request(document: str, context: list[PriorOutput] | None = None) -> LLMRequest:
    return LLMRequest(
        agent="a",
        provider="local",
        model="m",
        instructions="Be brief.",
        task="Summarize",
        document=document,
        document_name="doc.txt",
        context=context or [],
        max_tokens=200,
    )


def test_prompt_fits_context_window_by_cutting_document():
    doc = "".join(f"line {i}: something happened\n" for i in range(2000))
    prompt = build_prompt(_request(doc), window_tokens=2048)
    assert prompt.truncated_chars > 0
    assert estimate_tokens(prompt.system) + estimate_tokens(prompt.user) <= 2048 - 200
    assert "line 0:" in prompt.user and "line 1999:" in prompt.user  # head and tail kept
    assert "characters omitted to fit the model's context window" in prompt.user
    assert prompt.user.startswith("Task: Summarize")


def test_prompt_cuts_earlier_outputs_after_document():
    context = [PriorOutput(name="analyst", output="x" * 20_000)]
    prompt = build_prompt(_request("short doc" * 1000, context), window_tokens=1024)
    assert estimate_tokens(prompt.system) + estimate_tokens(prompt.user) <= 1024 - 200
    assert "### analyst" in prompt.user
    small = build_prompt(_request("tiny"), window_tokens=8192)
    assert small.truncated_chars == 0 and "tiny" in small.user


def test_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}, 60) == timedelta(seconds=3)
    assert parse_retry_after({"retry-after-ms": "1500"}, 60) == timedelta(seconds=1.5)
    assert parse_retry_after({"retry-after": "900"}, 60) == timedelta(seconds=60)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    delay = parse_retry_after({"retry-after": later}, 60)
    assert delay is not None and 25 <= delay.total_seconds() <= 31
    assert parse_retry_after({"retry-after": "soon"}, 60) is None
    assert parse_retry_after({}, 60) is None


def test_workflow_ids_are_readable():
    wid = make_workflow_id("sequential", "Summarize the Q3 report, please!")
    assert wid.startswith("seq-summarize-the-q3-report-ple")
    assert len(wid.rsplit("-", 1)[1]) == 8


def test_edit_diff_matches_a_whole_text_diff():
    """The local diff of a large draft's revision equals difflib over the whole texts."""
    import random

    from activities.drafts import edit_diff, unified_diff
    from chorus.contracts.drafting import TextEdit, apply_edit

    rng = random.Random(7)
    before = "".join(f"line {i}\n" for i in range(60))
    for _ in range(300):
        start = rng.randrange(len(before) + 1)
        end = min(len(before), start + rng.choice([0, 1, 5, 30]))
        edit = TextEdit(start=start, end=end, text=rng.choice(["", "X", "new\nlines\n", "\n"]))
        after = apply_edit(before, edit)
        assert edit_diff(before, edit, 5) == unified_diff(before, after, 5), edit


def test_validation_strips_controls_and_names_fields(monkeypatch):
    import pytest

    from chorus.contracts import validation
    from chorus.governance import content_check

    assert validation.strip_controls("a\x00b\x1bc\td\ne\r\x85f") == "abc\td\ne\rf"
    assert validation.control_problem("task", "ok\x07") == (
        "task: contains control character U+0007 at position 2 (only tab, newline and "
        "carriage return are allowed)"
    )
    with pytest.raises(validation.InputValidationError, match="task: 12 characters, the limit"):
        validation.clean_text("task", "x" * 12, max_chars=10)
    with pytest.raises(validation.InputValidationError, match="title: must not be empty"):
        validation.clean_text("title", " \x00 ", max_chars=10, required=True)
    with pytest.raises(validation.InputValidationError, match="draft_id: 'bad id'"):
        validation.check_identifier("draft_id", "bad id")
    validation.check_identifier("draft_id", "draft-release-notes-1a2b3c4d")
    monkeypatch.setenv("CHORUS_BLOCKED_TERMS", r"top secret,\bproject x\b")
    check = content_check.load_content_check(None)
    with pytest.raises(validation.InputValidationError, match="document: contains blocked"):
        content_check.check_content(check, {"task": "fine", "document": "About Project X today"})
    with pytest.raises(validation.InputValidationError, match="CHORUS_CONTENT_CHECK"):
        content_check.load_content_check("no_such_module:check")


def test_provider_rate_burst_defaults_to_one_seconds_worth():
    """Unset, a provider's burst is ceil(rpm / 60) calls (at least 1); it is validated."""
    import pydantic

    from chorus.config.settings import Settings
    from chorus.governance.provider_limits import DEFAULT_PROVIDER_LIMITS, ProviderLimit

    openai, anthropic, local = (
        DEFAULT_PROVIDER_LIMITS[p] for p in ("openai", "anthropic", "local")
    )
    assert (openai.concurrency, openai.rpm, openai.effective_burst) == (16, 500, 9)
    assert (anthropic.concurrency, anthropic.rpm, anthropic.effective_burst) == (8, 50, 1)
    assert (local.concurrency, local.rpm) == (1, 0)
    assert ProviderLimit(rpm=600, burst=3).effective_burst == 3
    assert ProviderLimit(rpm=60.5).effective_burst == 2
    for bad in (0, 10_001):
        with pytest.raises(pydantic.ValidationError, match="burst"):
            ProviderLimit(rpm=60, burst=bad)
    settings = Settings(provider_limits={"openai": {"rpm": 120, "burst": 4}})
    assert settings.provider_limits["openai"].effective_burst == 4
    assert settings.provider_limits["anthropic"] == anthropic  # the others keep their defaults


def test_generated_workflow_ids_do_not_quote_pii():
    """Issue 20: ids are never encrypted and land in logs: `seq-summarize-for-bob-corp-...`."""
    from starter.sdk import make_workflow_id, slugify

    workflow_id = make_workflow_id("sequential", "Summarize for bob@corp.example.com")
    assert workflow_id.startswith("seq-summarize-for-email-")
    assert "bob" not in workflow_id and "corp" not in workflow_id
    assert "4111" not in slugify("card 4111 1111 1111 1111 declined")


def test_html_export_renders_markdown_and_neutralises_scripts():
    """Issue 13: `## Introduction` was exported as `<p>## Introduction</p>`."""
    from datetime import UTC, datetime

    from starter.export import render

    content = (
        "## Introduction\n\nSome *emphasis* and a [site](https://example.com).\n\n"
        "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```\n\n"
        "<script>alert(1)</script> [click](javascript:alert(2)) <img src=x onerror=alert(3)>\n"
    )
    draft = {"title": "Notes <v2>", "status": "drafting", "version": 3, "content": content}
    revisions = [{"created_at": datetime(2026, 11, 30, tzinfo=UTC), "author": "alice"}]
    page = render(draft, revisions, "html")
    assert page.startswith("<!DOCTYPE html>") and "<title>Notes &lt;v2&gt;</title>" in page
    assert "<h2>Introduction</h2>" in page and "<em>emphasis</em>" in page
    assert '<a href="https://example.com">site</a>' in page
    assert "<ul>\n<li>one</li>" in page and "<td>1</td>" in page
    assert '<code class="language-python">print(' in page and "<style>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page and "<img" not in page


def test_x_should_retry_header_overrides_the_status():
    import httpx2
    import openai

    from activities.llm import map_provider_error

    def status_error(code: int, should_retry: str | None) -> openai.APIStatusError:
        headers = {"x-should-retry": should_retry} if should_retry else {}
        request = httpx2.Request("POST", "http://stub/v1/chat/completions")
        response = httpx2.Response(code, headers=headers, request=request, json={})
        return openai.APIStatusError("scripted", response=response, body=None)

    assert map_provider_error(status_error(500, None), "openai", "m", 60).non_retryable is False
    assert map_provider_error(status_error(500, "false"), "openai", "m", 60).non_retryable
    assert map_provider_error(status_error(400, None), "openai", "m", 60).non_retryable
    retried = map_provider_error(status_error(400, "true"), "openai", "m", 60)
    assert retried.non_retryable is False and retried.type == "InvalidRequest"
