"""Budgets on a real dev server and PostgreSQL, the LLM through a loopback OpenAI stub."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities import LLMActivities, ProviderClients
from chorus.config.settings import Settings
from chorus.contracts.models import LLMRequest
from chorus.governance import budget
from chorus.observability import metrics
from chorus.storage import db
from starter.sdk import RunFailedError
from tests.conftest import agent, running_worker
from tests.stub_llm import Reply, StubLLM

DAILY_BUDGET = 0.0006


@pytest.fixture
def stub(monkeypatch) -> Iterator[StubLLM]:
    with StubLLM(default_delay_s=0.05, usage_from_body=True) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server


def test_worst_case_bounds_the_real_cost():
    # 1,000 prompt bytes + template overhead and 100 output tokens at gpt-4o-mini's price.
    amount, priced = budget.worst_case_usd("openai", "gpt-4o-mini", 1000, 100)
    assert priced and amount == pytest.approx((1032 * 0.15 + 100 * 0.60) / 1e6)
    assert budget.worst_case_usd("local", "smollm2", 1000, 100)[0] == 0.0  # free: never held


async def test_50_concurrent_runs_never_pass_the_daily_budget(client, make_settings, stub):
    settings = make_settings(
        [{**agent("analyst", ["openai:gpt-4o-mini"]), "max_tokens": 100}],
        daily_budget_usd=DAILY_BUDGET,
        budget_alert_usd=DAILY_BUDGET / 2,
    )
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handles = await asyncio.gather(
                *(
                    chorus.start_sequential(
                        f"Summarize report {n}", ["analyst"], document="x" * 600
                    )
                    for n in range(50)
                )
            )
            results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
            pool = await chorus.pool()
            spent = float(await pool.fetchval("SELECT sum(cost_usd) FROM cost_ledger") or 0)
            spend_row = await pool.fetchrow(
                "SELECT reserved_usd, spent_usd, alerted_at FROM budget_spend"
                " WHERE period LIKE 'day:%'"
            )
            rows = await pool.fetch(
                "SELECT state, count(*) AS n FROM budget_reservations GROUP BY state"
            )
            states = {r["state"]: r["n"] for r in rows}
            lines = await budget.standing(pool, settings)
    finally:
        await clients.close()

    calls = stub.requests
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RunFailedError)]
    print(
        f"daily budget ${DAILY_BUDGET}: {len(succeeded)} runs succeeded, {len(refused)} refused, "
        f"settled ${spent:.8f}"
    )
    assert len(succeeded) + len(refused) == 50
    assert succeeded and refused  # the budget let some through and refused the rest
    assert spent <= DAILY_BUDGET
    assert spend_row is not None
    assert float(spend_row["spent_usd"]) == pytest.approx(spent)
    assert float(spend_row["reserved_usd"]) == 0  # every reservation settled or released
    assert spend_row["alerted_at"] is not None  # the alert fired (delivered by the workflow)
    assert states.get("reserved") is None and states["settled"] == len(succeeded)
    assert len(calls) == len(succeeded)  # refused calls never reached the provider
    message = str(refused[0])
    assert "budget 'daily'" in message and f"limit ${DAILY_BUDGET:.6f}" in message
    assert "worst case" in message and "analyst via openai:gpt-4o-mini" in message
    tried = refused[0].partial.steps[0].providers_tried if refused[0].partial else []
    assert [t.error_type for t in tried] == ["BudgetExceeded"]
    daily = next(line for line in lines if line.scope == "daily")
    assert daily.spent_usd == pytest.approx(spent) and daily.remaining_usd is not None
    assert daily.remaining_usd >= 0


async def test_run_budget_refuses_a_call_that_could_pass_it(client, make_settings, stub):
    settings = make_settings(
        [
            {**agent(n, ["openai:gpt-4o-mini"]), "max_tokens": 100}
            for n in ("analyst", "writer", "critic")
        ],
        run_budget_usd=0.0001,  # below one call's worst case (~$0.0002)
    )
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            handle = await chorus.start_sequential(
                "Review", ["analyst", "writer", "critic"], document="x" * 600
            )
            with pytest.raises(RunFailedError) as failure:
                await handle.result()
    finally:
        await clients.close()
    message = str(failure.value)
    assert "budget 'run'" in message and f"(run:{handle.workflow_id})" in message
    partial = failure.value.partial
    assert partial is not None and [s.status for s in partial.steps] == ["failed"]
    assert stub.requests == []  # refused before the provider was called


async def test_budget_limits_are_validated(client, make_settings):
    settings = make_settings([agent("analyst", ["local:fake"])])
    from tests.workflows.test_drafts import no_llm

    async with running_worker(client, settings, no_llm) as chorus:
        pool = await chorus.pool()
        with pytest.raises(ValueError, match="alert_usd: only the daily budget"):
            await budget.set_limit(pool, "run", 1.0, alert_usd=0.5)
        with pytest.raises(ValueError, match="scope: 'weekly'"):
            await budget.set_limit(pool, "weekly", 1.0)
        with pytest.raises(ValueError, match=r"alert_usd: must be between 0 and the limit"):
            await budget.set_limit(pool, "daily", 1.0, alert_usd=2.0)
        await budget.set_limit(pool, "daily", 2.5, alert_usd=2.0, author="ops")
        await budget.set_limit(pool, "agent:writer", 0.5)
        lines = {line.scope: line for line in await budget.standing(pool, settings)}
    assert lines["daily"].limit_usd == 2.5 and lines["daily"].alert_usd == 2.0
    assert lines["agent:writer"].remaining_usd == 0.5


async def test_budget_cli_sets_and_shows(client, make_settings):
    import json
    import os
    import sys

    from tests.starter.test_draft_cli import run

    settings = make_settings([agent("analyst", ["local:fake"])])
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DATABASE_URL": settings.database_url or "",
    }
    cli = (sys.executable, "-m", "starter.cli", "budget")
    code, out, err = await run(*cli, "set", "--daily", "5", "--alert", "4", "--agent",
                               "writer=1.5", "--json", env=env)  # fmt: skip
    assert code == 0, err
    code, out, err = await run(*cli, "show", "--json", env=env)
    lines = {line["scope"]: line for line in json.loads(out)}
    assert (lines["daily"]["limit_usd"], lines["daily"]["alert_usd"]) == (5.0, 4.0)
    assert lines["agent:writer"]["remaining_usd"] == 1.5
    code, out, err = await run(*cli, "set", "--alert", "4", env=env)
    assert code == 2 and "--alert needs --daily" in err
    code, out, err = await run(*cli, "set", "--daily", "1", "--alert", "3", env=env)
    assert code == 2 and "alert_usd: must be between 0 and the limit" in err


async def _store(database_url: str):
    from chorus.config.settings import Settings
    from chorus.storage import db

    settings = Settings(database_url=database_url, daily_budget_usd=None, run_budget_usd=None)
    return await db.open_store(settings), settings


def _call(activity_id: str, amount: float, **extra: Any) -> dict[str, Any]:
    return {
        "workflow_id": "wf-1",
        "activity_id": activity_id,
        "root_workflow_id": "wf-1",
        "agent": "writer",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "amount_usd": amount,
        **extra,
    }


async def test_reserve_settle_release_rules(database_url):
    """The server-side reserve/settle (migration 0006) keep version 4's rules, one by one."""
    pool, settings = await _store(database_url)
    paid: dict[str, Any] = {"root_workflow_id": "wf-1", "agent": "writer", "provider": "openai"}
    try:
        # No budget applies: nothing is held, written or locked before the call...
        free = await budget.reserve(pool, settings, **_call("1", 0.01))
        assert (free.amount_usd, free.held, free.already_settled) == (0.0, False, False)
        assert await pool.fetchval("SELECT count(*) FROM budget_spend") == 0
        assert await pool.fetchval("SELECT count(*) FROM budget_reservations") == 0
        # ...and the cost is counted after it, once however often the settle is retried.
        for _ in range(2):
            assert await budget.settle(pool, settings, workflow_id="wf-1", activity_id="1",
                                       cost_usd=0.004, **paid) == []  # fmt: skip
        spend = {r["period"]: r for r in await pool.fetch("SELECT * FROM budget_spend")}
        assert {p.split(":")[0] for p in spend} == {"day", "run", "agent"}
        assert all(float(r["spent_usd"]) == 0.004 and r["reserved_usd"] == 0 for r in
                   spend.values())  # fmt: skip
        assert (await budget.reserve(pool, settings, **_call("1", 0.01))).already_settled
        # A free call (cost 0) writes nothing.
        assert await budget.settle(pool, settings, workflow_id="wf-1", activity_id="free",
                                   cost_usd=0.0, **paid) == []  # fmt: skip
        assert await pool.fetchval("SELECT count(*) FROM budget_reservations") == 1

        # With a budget: held, idempotent per (workflow, activity), settled to the real cost.
        limited = settings.model_copy(update={"daily_budget_usd": 1.0})
        held = await budget.reserve(pool, limited, **_call("2", 0.01))
        assert (held.amount_usd, held.held) == (0.01, True)
        again = await budget.reserve(pool, limited, **_call("2", 0.05))
        assert (again.amount_usd, again.held) == (0.01, True)
        await budget.settle(pool, limited, workflow_id="wf-1", activity_id="2", cost_usd=0.002)
        done = await budget.reserve(pool, limited, **_call("2", 0.01))
        assert done.already_settled and not done.held
        day = next(p for p in spend if p.startswith("day:"))
        assert await pool.fetchval("SELECT spent_usd FROM budget_spend WHERE period = $1",
                                   day) == Decimal("0.006")  # fmt: skip

        # The table's row for a scope overrides the settings' default; refusal names it.
        await pool.execute("INSERT INTO budgets (scope, limit_usd) VALUES ('agent:writer', 0.01)")
        with pytest.raises(budget.BudgetExceededError) as refused:
            await budget.reserve(pool, settings, **_call("3", 0.0050))
        assert refused.value.budget == "agent:writer"
        assert refused.value.limit_usd == 0.01 and refused.value.committed_usd == 0.006
        # The settings' run budget applies where the table has no run row.
        strict = settings.model_copy(update={"run_budget_usd": 0.007})
        with pytest.raises(budget.BudgetExceededError) as refused:
            await budget.reserve(pool, strict, **_call("4", 0.002))
        assert refused.value.budget == "run"
        assert await pool.fetchval("SELECT count(*) FROM budget_reservations") == 2

        # Release gives the reservation back; a later unreserved settle still counts once.
        await budget.reserve(pool, settings, **_call("5", 0.001))
        await budget.release(pool, workflow_id="wf-1", activity_id="5")
        assert await pool.fetchval("SELECT sum(reserved_usd) FROM budget_spend") == 0
        await pool.execute("DELETE FROM budgets")
        for _ in range(2):
            await budget.settle(pool, settings, workflow_id="wf-1", activity_id="5",
                                cost_usd=0.001, **paid)  # fmt: skip
        assert await pool.fetchval("SELECT spent_usd FROM budget_spend WHERE period = $1",
                                   day) == Decimal("0.007")  # fmt: skip
    finally:
        await pool.close()


async def test_settle_reports_the_alert_crossing_once(database_url):
    pool, settings = await _store(database_url)
    settings = settings.model_copy(update={"daily_budget_usd": 1.0, "budget_alert_usd": 0.005})
    try:
        crossed = []
        for n in range(3):
            await budget.reserve(pool, settings, **_call(str(n), 0.01))
            crossed.append(await budget.settle(pool, settings, workflow_id="wf-1",
                                               activity_id=str(n), cost_usd=0.003))  # fmt: skip
        assert [len(c) for c in crossed] == [0, 1, 0]
        assert crossed[1][0].startswith("day:")
        # A table row for 'daily' replaces the settings' alert threshold.
        await pool.execute("INSERT INTO budgets (scope, limit_usd, alert_usd) VALUES "
                           "('daily', 5, NULL)")  # fmt: skip
        await pool.execute("UPDATE budget_spend SET alerted_at = NULL")
        await budget.reserve(pool, settings, **_call("9", 0.01))
        assert await budget.settle(pool, settings, workflow_id="wf-1", activity_id="9",
                                   cost_usd=0.003) == []  # fmt: skip
    finally:
        await pool.close()


async def test_call_llm_returns_the_budget_alert_and_posts_nothing(database_url, stub, tmp_path):
    """Issue 18: the call whose cost crosses the daily alert threshold returns the alert in
    ``budget_alerts`` (the workflow delivers it with the retried ``chorus.deliver_budget_alert``),
    logs and counts it once per day; ``chorus.call_llm`` itself POSTs nothing, so a slow or
    failing receiver can neither delay nor lose a paid answer."""
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        daily_budget_usd=1.0,
        run_budget_usd=None,
        budget_alert_webhook_url=f"{stub.base_url}/budget-alerts",
        callback_secret="alert-secret",
    )
    pool = await db.open_store(settings)
    clients = ProviderClients.from_settings(settings)
    activities = LLMActivities(clients, settings, pool)
    env = ActivityEnvironment()
    req = LLMRequest(
        agent="analyst", provider="openai", model="gpt-4o-mini", instructions="i", task="x" * 4000
    )
    counted = metrics.BUDGET_ALERTS._value.get()
    responses = []
    try:
        for n in range(3):
            env.info = dataclasses.replace(
                ActivityEnvironment.default_info(),
                workflow_id="wf-alert",
                activity_id=str(n),
                started_time=datetime.now(UTC),
                start_to_close_timeout=timedelta(seconds=60),
            )
            responses.append(await env.run(activities.call_llm, req))
            if n == 0:  # a threshold between one call's cost and two calls'
                threshold = round(responses[0].cost_usd * 1.5, 6)
                await budget.set_limit(pool, "daily", 1.0, alert_usd=threshold)
    finally:
        await clients.close()
        await pool.close()
    assert [len(r.budget_alerts) for r in responses] == [0, 1, 0]  # once per day
    alert = responses[1].budget_alerts[0]
    assert alert.period.startswith("day:")
    assert alert.alert_usd == pytest.approx(threshold)
    assert alert.limit_usd == 1.0
    assert alert.spent_usd == pytest.approx(responses[0].cost_usd + responses[1].cost_usd)
    assert metrics.BUDGET_ALERTS._value.get() == counted + 1
    assert [r.path for r in stub.requests if "budget-alerts" in r.path] == []
    assert len(stub.requests) == 3  # the three completions, nothing else


async def test_budget_alert_webhook_is_delivered_once_during_runs(client, make_settings, stub):
    """A run whose call crosses the daily alert threshold delivers the alert once, by its own
    retried activity (``chorus.deliver_budget_alert``, issue 18), not inside the LLM call."""
    from temporalio.api.enums.v1 import EventType

    settings = make_settings(
        [{**agent("analyst", ["openai:gpt-4o-mini"]), "max_tokens": 100}],
        daily_budget_usd=1.0,
        budget_alert_usd=0.000001,  # the first call crosses it
        budget_alert_webhook_url=f"{stub.base_url}/budget-alerts",
        callback_secret="alert-secret",
    )
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            ids = []
            for n in range(3):
                handle = await chorus.start_sequential(f"Summarize report {n}", ["analyst"])
                await handle.result()
                ids.append(handle.workflow_id)
    finally:
        await clients.close()
    alerts = [r for r in stub.requests if r.path.endswith("/budget-alerts")]
    assert len(alerts) == 1 and alerts[0].body["event"] == "budget_alert"  # once per day
    assert alerts[0].body["alert_usd"] == 0.000001
    scheduled = []
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        scheduled += [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
    assert scheduled.count("chorus.deliver_budget_alert") == 1


async def test_models_the_old_table_lacked_are_priced_and_budgeted(client, make_settings, stub):
    """Issue 13: gpt-5-mini cost $0 with cost_known false and was never stopped by a budget.
    Now genai-prices prices it, so a tiny daily budget refuses its second call; cached input
    tokens are billed at the discounted rate exactly as the library computes; a model nobody
    priced is refused before the call, naming the model and how to price it."""
    from genai_prices import Usage, calc_price

    from chorus.governance.pricing import cost_usd

    settings = make_settings(
        [agent("analyst", ["openai:gpt-5-mini"]), agent("guesser", ["openai:mystery-model"])],
        daily_budget_usd=1.0,  # the first call is certainly within it
        allow_unpriced_models=False,
    )
    stub.script("gpt-5-mini", Reply(usage={"prompt_tokens_details": {"cached_tokens": 8}}))
    clients = ProviderClients.from_settings(settings)
    try:
        async with running_worker(
            client, settings, lambda pool: LLMActivities(clients, settings, pool).call_llm
        ) as chorus:
            first = await (await chorus.start_sequential("one", ["analyst"])).result()
            pool = await chorus.pool()
            held = await pool.fetchval(  # the worst case the first call reserved
                "SELECT reserved_usd::float8 FROM budget_reservations WHERE workflow_id = $1",
                first.workflow_id,
            )
            assert held and first.totals.cost_usd > 0
            # Room for one more worst case, but not on top of what the first call spent.
            await chorus.set_budget("daily", held + first.totals.cost_usd / 2)
            with pytest.raises(RunFailedError, match=r"budget"):
                await (await chorus.start_sequential("two", ["analyst"])).result()
            with pytest.raises(RunFailedError) as unpriced:
                await (await chorus.start_sequential("three", ["guesser"])).result()
            row = await pool.fetchrow(
                "SELECT input_tokens, output_tokens, cached_input_tokens, cost_usd::float8 AS"
                " cost, cost_known, price_data FROM cost_ledger WHERE workflow_id = $1",
                first.workflow_id,
            )
    finally:
        await clients.close()
    assert row is not None and row["cost_known"] and row["cached_input_tokens"] == 8
    expected = calc_price(
        Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=8,
        ),
        "gpt-5-mini",
        provider_id="openai",
    ).total_price
    assert row["cost"] == pytest.approx(float(expected), abs=1e-8)
    uncached, _ = cost_usd("openai", "gpt-5-mini", row["input_tokens"], row["output_tokens"])
    assert row["cost"] < uncached
    assert row["price_data"].startswith("genai-prices ")
    message = str(unpriced.value)
    assert "openai:mystery-model has no price" in message
    assert "CHORUS_PRICES_FILE" in message and "CHORUS_ALLOW_UNPRICED_MODELS" in message
    assert stub.for_model("mystery-model") == []  # refused before the call
    assert len(stub.for_model("gpt-5-mini")) == 1
