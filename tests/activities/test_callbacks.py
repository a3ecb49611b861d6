"""Signed run callbacks: the signature scheme, and delivery from real runs to a loopback receiver.

The receiver is a starlette app served by uvicorn on 127.0.0.1; it verifies every request the
way the README tells receivers to, and deduplicates on ``X-Chorus-Delivery``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer

from activities import CallbackActivities
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import BudgetAlert
from chorus.contracts.names import DELIVER_CALLBACK_ACTIVITY
from chorus.integrations import webhooks as callbacks_module
from chorus.integrations.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackPayload,
    SignatureError,
    sign,
    signed_headers,
    url_host,
    validate_callback_url,
    verify,
)
from chorus.runtime.converter import chorus_data_converter
from starter.sdk import ChorusClient, ChorusInputError, RunFailedError
from tests.conftest import agent, running_worker
from workflows import WORKFLOWS

SECRET = "test-callback-secret"
"""A plain-string secret, as before Standard Webhooks; still signs both header sets."""
LOCAL = ["local:fake"]

# --- the signature scheme ------------------------------------------------------------------


WHSEC = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks example form


@pytest.mark.parametrize("secret", [WHSEC, SECRET])
def test_standard_webhooks_signature_verifies_with_the_library(secret):
    body = b'{"status":"succeeded"}'
    now = int(time.time())
    headers = signed_headers(secret, body, "seq-x:run-1", now)
    assert headers["webhook-id"] == "seq-x:run-1"
    assert headers["webhook-timestamp"] == str(now)
    receiver = Webhook(secret) if secret.startswith("whsec_") else Webhook(secret.encode())
    assert receiver.verify(body, headers) == {"status": "succeeded"}


@pytest.mark.parametrize(
    "tamper",
    ["id", "body", "timestamp", "stale", "future", "secret"],
)
def test_standard_webhooks_refuses_altered_or_replayed_deliveries(tamper):
    """Issue 13: the old signature covered timestamp.body only, so a receiver deduplicating on
    X-Chorus-Delivery accepted an altered delivery id."""
    body = b'{"status":"succeeded"}'
    now = int(time.time())
    when = {"stale": now - 301, "future": now + 301}.get(tamper, now)
    headers = signed_headers(WHSEC, body, "seq-x:run-1", when)
    if tamper == "id":
        headers["webhook-id"] = "seq-x:run-2"
    elif tamper == "body":
        body = b'{"status":"failed"}'
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(now + 5)
    secret = "whsec_" + "A" * 32 if tamper == "secret" else WHSEC
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_secret_rotation_signs_with_every_secret():
    body = b"{}"
    new, old = callbacks_module.new_secret(), WHSEC
    headers = signed_headers(f"{new}, {old}", body, "d", int(time.time()))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):  # a receiver that holds either secret verifies
        Webhook(secret).verify(body, headers)
    with pytest.raises(ValueError, match="base64"):
        signed_headers("whsec_not base64!", body, "d", 0)


def test_signature_verifies_and_matches_the_documented_recipe():
    body = b'{"status":"succeeded"}'
    headers = signed_headers(SECRET, body, "seq-x:run-1", 1_700_000_000)
    assert headers[SIGNATURE_HEADER] == "v1=" + sign(SECRET.encode(), 1_700_000_000, body)
    # the recipe a receiver follows, written out by hand
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"
    lowered = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    assert verify(SECRET.encode(), lowered, body, now=1_700_000_100) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "body", "now", "message"),
    [
        (SECRET, b'{"status":"failed"}', 1_700_000_000, "does not match"),
        ("wrong-secret", b'{"status":"succeeded"}', 1_700_000_000, "does not match"),
        (SECRET, b'{"status":"succeeded"}', 1_700_000_301, "outside the 300 s tolerance"),
        (SECRET, b'{"status":"succeeded"}', 1_699_999_000, "outside the 300 s tolerance"),
    ],
    ids=["tampered-body", "wrong-secret", "stale", "from-the-future"],
)
def test_signature_refused(secret, body, now, message):
    headers = signed_headers(SECRET, b'{"status":"succeeded"}', "d", 1_700_000_000)
    with pytest.raises(SignatureError, match=message):
        verify(secret.encode(), headers, body, now=now)


def test_signature_header_problems_are_named():
    body = b"{}"
    good = signed_headers(SECRET, body, "d", 1_700_000_000)
    with pytest.raises(SignatureError, match="missing X-Chorus-Signature"):
        verify(SECRET.encode(), {TIMESTAMP_HEADER: "1700000000"}, body, now=1_700_000_000)
    with pytest.raises(SignatureError, match="missing X-Chorus-Timestamp"):
        verify(SECRET.encode(), {SIGNATURE_HEADER: good[SIGNATURE_HEADER]}, body)
    with pytest.raises(SignatureError, match="must be Unix seconds"):
        verify(SECRET.encode(), {**good, TIMESTAMP_HEADER: "yesterday"}, body)
    with pytest.raises(SignatureError, match="no v1= signature"):
        verify(SECRET.encode(), {**good, SIGNATURE_HEADER: "v0=abc"}, body, now=1_700_000_000)
    # several signatures (e.g. during a secret rotation): one match is enough
    rotated = {**good, SIGNATURE_HEADER: "v1=" + "0" * 64 + ", " + good[SIGNATURE_HEADER]}
    assert verify(SECRET.encode(), rotated, body, now=1_700_000_000) == 1_700_000_000


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "callback_url: scheme must be http or https, got 'ftp'"),
        ("example.com/hook", "callback_url: scheme must be http or https"),
        ("https:///hook", "callback_url: 'https:///hook' has no host"),
        ("https://example.com/" + "a" * 2048, "callback_url: 2068 characters, the limit is 2048"),
    ],
)
def test_callback_url_validation_names_the_field(url, message):
    with pytest.raises(ValueError, match=message):
        validate_callback_url(url)
    assert validate_callback_url("https://hooks.example.com/chorus?x=1").startswith("https://")


async def test_sdk_refuses_a_bad_callback_url_before_starting(client):
    chorus = ChorusClient(client, Settings())
    with pytest.raises(ChorusInputError, match="callback_url: scheme must be http or https"):
        await chorus.start_sequential("t", ["analyst"], callback_url="file:///etc/passwd")
    with pytest.raises(ChorusInputError, match="callback_url: 2068 characters"):
        await chorus.start_parallel("t", ["a"], callback_url="http://x.example/" + "a" * 2051)


# --- delivery from real runs ---------------------------------------------------------------


@dataclass
class Delivery:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool


@dataclass
class Receiver:
    """A callback receiver that verifies, deduplicates and answers from a script.

    ``script[n]`` is the behaviour for the n-th request: ``"fail"`` answers 500 before storing,
    ``"store-then-fail"`` stores the result then answers 500 (a crash after the commit),
    ``"retry-after"`` answers 503 with ``Retry-After: 1``, ``"hold"`` waits for ``release``
    then stores and answers 200, an int answers that status; requests past the script store and
    answer 200.
    """

    script: list[str | int] = field(default_factory=list)
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    stored: dict[str, CallbackPayload] = field(default_factory=dict)
    duplicates: int = 0
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        try:  # as the README tells receivers: the Standard Webhooks library
            Webhook(SECRET.encode()).verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            verified = False
        self.deliveries.append(Delivery(dict(request.headers), body, time.monotonic(), verified))
        if not verified:
            return Response("bad signature", status_code=400)
        step = (
            self.script[len(self.deliveries) - 1]
            if len(self.deliveries) <= len(self.script)
            else "ok"
        )
        if isinstance(step, int):
            return Response(status_code=step)
        if step == "fail":
            return Response(status_code=500)
        if step == "retry-after":
            return Response(status_code=503, headers={"Retry-After": "1"})
        if step == "hold":
            self.holding.set()
            await self.release.wait()
        delivery = request.headers["webhook-id"]
        if delivery in self.stored:
            self.duplicates += 1
            return Response(status_code=200)
        self.stored[delivery] = CallbackPayload.model_validate_json(body)
        return Response(status_code=500 if step == "store-then-fail" else 200)


R = TypeVar("R", "Receiver", "AlertReceiver")


@dataclass
class AlertReceiver:
    """A budget-alert receiver: records every request and answers ``script[n]`` (an HTTP
    status, with ``Retry-After: 7`` on a 503), then 200."""

    script: list[int] = field(default_factory=list)
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        try:
            Webhook(SECRET.encode()).verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            verified = False
        self.deliveries.append(Delivery(dict(request.headers), body, time.monotonic(), verified))
        n = len(self.deliveries) - 1
        status = self.script[n] if n < len(self.script) else 200
        return Response(status_code=status, headers={"Retry-After": "7"} if status == 503 else {})


@asynccontextmanager
async def serve(receiver: R) -> AsyncIterator[R]:
    """Serve ``receiver`` on a free loopback port for the duration of the block."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/chorus?tenant=t1"
    app = Starlette(routes=[Route("/hooks/chorus", receiver.endpoint, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes a flag, not an event
            await asyncio.sleep(0.01)
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()


async def callback_attempts(client: Client, workflow_id: str) -> list[tuple[str, int]]:
    """``(outcome, attempt)`` of each callback activity in the run's history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name
        == DELIVER_CALLBACK_ACTIVITY
    }
    started = {
        e.event_id: e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    }
    outcomes = []
    for e in history.events:
        if e.HasField("activity_task_completed_event_attributes"):
            done = e.activity_task_completed_event_attributes
            if done.scheduled_event_id in scheduled:
                outcomes.append(("completed", started[done.started_event_id]))
        if e.HasField("activity_task_failed_event_attributes"):
            failed = e.activity_task_failed_event_attributes
            if failed.scheduled_event_id in scheduled:
                outcomes.append(("failed", started[failed.started_event_id]))
    await Replayer(workflows=WORKFLOWS, data_converter=chorus_data_converter).replay_workflow(
        history
    )
    return outcomes


def settings_for(make_settings, names, **overrides):
    values = {"callback_secret": SECRET, "callback_retry_initial_s": 0.1, **overrides}
    return make_settings([agent(n, LOCAL) for n in names], **values)


async def test_receiver_failing_twice_gets_the_result_once(client, make_settings, fake_llm):
    settings = settings_for(make_settings, ("analyst", "writer"))
    async with (
        serve(Receiver(script=["fail", "store-then-fail"])) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential(
            "Summarize", ["analyst", "writer"], callback_url=receiver.url
        )
        result = await handle.result()

    assert len(receiver.deliveries) == 3 and all(d.verified for d in receiver.deliveries)
    assert [d.headers["x-chorus-attempt"] for d in receiver.deliveries] == ["1", "2", "3"]
    delivery = f"{handle.workflow_id}:{handle.run_id}"
    assert {d.headers["x-chorus-delivery"] for d in receiver.deliveries} == {delivery}
    assert list(receiver.stored) == [delivery] and receiver.duplicates == 1
    payload = receiver.stored[delivery]
    assert (payload.workflow_id, payload.run_id) == (handle.workflow_id, handle.run_id)
    assert (payload.workflow_type, payload.status, payload.error) == (
        "ChorusSequential",
        "succeeded",
        None,
    )
    assert payload.output == result.output == "writer output [saw: analyst]"
    assert payload.totals.llm_calls == 2
    assert payload.totals.input_tokens == result.totals.input_tokens == 210
    assert payload.totals.cost_usd == pytest.approx(result.totals.cost_usd)
    assert payload.finished_at >= result.finished_at
    assert await callback_attempts(client, handle.workflow_id) == [("completed", 3)]


async def test_failed_and_cancelled_runs_deliver_their_outcome(client, make_settings, fake_llm):
    settings = settings_for(make_settings, ("analyst", "writer", "aggregator"))
    fake_llm.fail("analyst", "local", "InvalidRequest")
    gate = fake_llm.gate("writer")
    async with (
        serve(Receiver()) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        failed = await chorus.start_parallel(
            "t", ["analyst"], aggregator=None, callback_url=receiver.url
        )
        with pytest.raises(RunFailedError):
            await failed.result()
        cancelled = await chorus.start_sequential("t", ["writer"], callback_url=receiver.url)
        await asyncio.wait_for(fake_llm.started["writer"].wait(), 20)
        await chorus.cancel(cancelled.workflow_id)
        with pytest.raises(RunFailedError) as cancel_failure:
            await cancelled.result()
        gate.set()

    assert cancel_failure.value.status == "CANCELLED"
    assert all(d.verified for d in receiver.deliveries) and len(receiver.deliveries) == 2
    by_id = {p.workflow_id: p for p in receiver.stored.values()}
    fail = by_id[failed.workflow_id]
    assert (fail.status, fail.output, fail.workflow_type) == ("failed", None, "ChorusParallel")
    assert fail.error and "only 0 of 1 branches succeeded" in fail.error
    cancel = by_id[cancelled.workflow_id]
    assert (cancel.status, cancel.error, cancel.output) == ("cancelled", "cancelled", None)
    assert await callback_attempts(client, cancelled.workflow_id) == [("completed", 1)]


async def test_callback_failing_for_good_leaves_the_run_result(client, make_settings, fake_llm):
    settings = settings_for(make_settings, ("analyst",))
    async with (
        serve(Receiver(script=[410])) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential("t", ["analyst"], callback_url=receiver.url)
        result = await handle.result()
    assert result.output == "analyst output [saw: ]"
    assert len(receiver.deliveries) == 1 and receiver.stored == {}  # 410: not retried
    assert await callback_attempts(client, handle.workflow_id) == [("failed", 1)]


async def test_worker_without_secret_sends_nothing(client, make_settings, fake_llm):
    settings = settings_for(make_settings, ("analyst",), callback_secret=None)
    async with (
        serve(Receiver()) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential("t", ["analyst"], callback_url=receiver.url)
        result = await handle.result()
        history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert result.output == "analyst output [saw: ]" and receiver.deliveries == []
    failures = [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert len(failures) == 1
    assert failures[0].application_failure_info.type == "CallbackNotConfigured"
    assert "CHORUS_CALLBACK_SECRET is not set" in failures[0].message


async def test_retry_after_sets_the_next_attempt(client, make_settings, fake_llm):
    settings = settings_for(make_settings, ("analyst",))
    async with (
        serve(Receiver(script=["retry-after"])) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential("t", ["analyst"], callback_url=receiver.url)
        await handle.result()
    first, second = receiver.deliveries
    assert second.at - first.at >= 0.9  # Retry-After: 1 beat the 0.1 s initial interval
    assert len(receiver.stored) == 1


async def test_cancel_during_delivery_neither_stops_it_nor_changes_the_result(
    client, make_settings, fake_llm
):
    settings = settings_for(make_settings, ("analyst",))
    async with (
        serve(Receiver(script=["hold"])) as receiver,
        running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus,
    ):
        handle = await chorus.start_sequential("t", ["analyst"], callback_url=receiver.url)
        await asyncio.wait_for(receiver.holding.wait(), 20)
        await chorus.cancel(handle.workflow_id)  # the run has ended; its callback is in flight
        await asyncio.sleep(0.5)
        receiver.release.set()
        result = await handle.result()
    assert result.output == "analyst output [saw: ]"
    assert [p.status for p in receiver.stored.values()] == ["succeeded"]
    history = await client.get_workflow_handle(handle.workflow_id).fetch_history()
    assert any(
        e.HasField("workflow_execution_cancel_requested_event_attributes") for e in history.events
    )
    assert history.events[-1].HasField("workflow_execution_completed_event_attributes")
    assert await callback_attempts(client, handle.workflow_id) == [("completed", 1)]


# --- budget alerts: the chorus.deliver_budget_alert activity --------------------------------

ALERT = BudgetAlert(period="day:2026-11-30", spent_usd=0.31, alert_usd=0.3, limit_usd=1.0)


def alert_settings(tmp_path, url: str | None, secret: str | None = SECRET) -> Settings:
    return Settings(
        database_url="postgresql://unused",
        data_dir=tmp_path / "data",
        budget_alert_webhook_url=url,
        callback_secret=secret,
        max_retry_after_s=60,
    )


@pytest.mark.parametrize("secret", [SECRET, None], ids=["signed", "no-secret"])
async def test_budget_alert_is_posted_with_its_period_as_delivery_id(tmp_path, secret):
    async with serve(AlertReceiver()) as receiver:
        activities = CallbackActivities(alert_settings(tmp_path, receiver.url, secret))
        await ActivityEnvironment().run(activities.deliver_budget_alert, ALERT)
    (delivery,) = receiver.deliveries
    assert json.loads(delivery.body) == {
        "event": "budget_alert",
        "period": "day:2026-11-30",
        "spent_usd": 0.31,
        "alert_usd": 0.3,
        "limit_usd": 1.0,
    }
    if secret is None:  # as before the activity: sent, unsigned
        assert not delivery.verified and "webhook-signature" not in delivery.headers
    else:
        assert delivery.verified
        assert delivery.headers["webhook-id"] == "budget-alert:day:2026-11-30"


async def test_budget_alert_without_a_webhook_url_sends_nothing(tmp_path):
    activities = CallbackActivities(alert_settings(tmp_path, None))
    await ActivityEnvironment().run(activities.deliver_budget_alert, ALERT)  # no error, no POST


@pytest.mark.parametrize(
    ("status", "error_type", "retried", "delay_s"),
    [
        (503, errors.CALLBACK_UNAVAILABLE, True, 7),
        (429, errors.CALLBACK_UNAVAILABLE, True, None),
        (408, errors.CALLBACK_UNAVAILABLE, True, None),
        (404, errors.CALLBACK_REJECTED, False, None),
        (302, errors.CALLBACK_REJECTED, False, None),
    ],
)
async def test_budget_alert_failures_map_like_callbacks(
    tmp_path, status, error_type, retried, delay_s
):
    async with serve(AlertReceiver(script=[status])) as receiver:
        activities = CallbackActivities(alert_settings(tmp_path, receiver.url))
        with pytest.raises(ApplicationError) as failure:
            await ActivityEnvironment().run(activities.deliver_budget_alert, ALERT)
    assert failure.value.type == error_type
    assert failure.value.non_retryable is not retried
    assert f"budget alert to {url_host(receiver.url)}: receiver answered HTTP {status}" in str(
        failure.value
    )
    delay = failure.value.next_retry_delay
    assert (delay.total_seconds() if delay else None) == delay_s


async def test_budget_alert_to_an_unreachable_receiver_is_retried(tmp_path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"
        activities = CallbackActivities(alert_settings(tmp_path, url))
        with pytest.raises(ApplicationError) as failure:
            await ActivityEnvironment().run(activities.deliver_budget_alert, ALERT)
    finally:
        sock.close()
    assert failure.value.type == errors.CALLBACK_UNAVAILABLE
    assert not failure.value.non_retryable


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("http://127.0.0.1:9/alerts", "whsec_not*base64", "must be base64"),
        ("ftp://example.com/alerts", SECRET, "CHORUS_BUDGET_ALERT_WEBHOOK_URL: scheme"),
    ],
    ids=["malformed-secret", "bad-url"],
)
async def test_budget_alert_misconfiguration_is_not_retried(tmp_path, url, secret, message):
    activities = CallbackActivities(alert_settings(tmp_path, url, secret))
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(activities.deliver_budget_alert, ALERT)
    assert failure.value.type == errors.CALLBACK_NOT_CONFIGURED
    assert failure.value.non_retryable
    assert message in str(failure.value)
