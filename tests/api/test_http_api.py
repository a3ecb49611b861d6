"""The HTTP API end to end: a real uvicorn server over the SDK, a real Temporal dev server and
PostgreSQL, a Chorus worker with the scripted fake LLM; requests with httpx.

Covers every ``/v1`` endpoint, API-key failures (401/403/429), problem documents with request
ids, bad input refused before any run starts (malformed JSON, wrong types, unknown fields,
oversize bodies by header and while streaming, unknown agents), the idempotent POST under
concurrency, approvals, drafts (with their event stream) and the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import pytest

from chorus.contracts.control import GateStep
from chorus.contracts.models import AgentStep
from starter.api import build_app
from tests.api.support import SERVER_SECRET, new_key, serving
from tests.conftest import agent, running_worker

LOCAL = ["local:fake"]


def catalog(*names: str) -> list[dict[str, object]]:
    return [agent(n, LOCAL) for n in names]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def wait_status(http: httpx.AsyncClient, workflow_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            r = await http.get(f"/v1/runs/{workflow_id}")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["status"] == status:
                return body
            await asyncio.sleep(0.1)


async def raw_request(base: str, head: str) -> tuple[int, str]:
    """Send ``head`` (request line and headers, no body) and read the answer."""
    port = int(base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read(65_536)
    finally:
        writer.close()
    text = data.decode()
    return int(text.split(" ", 2)[1]), text


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["request_id"] == r.headers["x-request-id"]
    return body


@pytest.fixture
def api_settings(make_settings: Any) -> Any:
    return make_settings(
        catalog("writer", "critic", "publisher", "aggregator"), api_key_secret=SERVER_SECRET
    )


@asynccontextmanager
async def _stack(client: Any, settings: Any, fake_llm: Any) -> AsyncIterator[tuple[Any, str]]:
    async with running_worker(client, settings, lambda _pool: fake_llm.call_llm) as chorus:
        async with serving(build_app(settings, chorus=chorus)) as base:
            yield chorus, base


async def test_runs_end_to_end(client: Any, api_settings: Any, fake_llm: Any) -> None:
    began = datetime.now(UTC)
    async with _stack(client, api_settings, fake_llm) as (chorus, base):
        key = await new_key(chorus, api_settings, "ci")
        async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
            r = await http.post(
                "/v1/runs", json={"task": "Write a post", "agents": ["writer", "critic"]}
            )
            assert r.status_code == 202, r.text
            created = r.json()
            wf = created["workflow_id"]
            assert r.headers["location"] == created["links"]["self"]
            assert created["links"]["events"].endswith(f"/v1/runs/{wf}/events")
            done = await wait_status(http, wf, "COMPLETED")
            assert [s["name"] for s in done["result"]["steps"]] == ["writer", "critic"]
            assert done["api_key"] == "ci"  # the run records the key that started it
            assert done["progress"] is None  # closed: not queried unless asked
            r = await http.get(f"/v1/runs/{wf}", params={"progress": "true"})
            assert [s["name"] for s in r.json()["progress"]["steps"]] == ["writer", "critic"]

            # A plan (the plan-file format as JSON), parallel, with a nested group.
            r = await http.post(
                "/v1/runs",
                json={
                    "task": "Compare",
                    "plan": {
                        "pattern": "parallel",
                        "steps": ["writer", {"kind": "sequential", "steps": ["critic", "writer"]}],
                        "aggregator": "aggregator",
                    },
                },
            )
            assert r.status_code == 202, r.text
            par = r.json()["workflow_id"]
            assert par.startswith("par-")
            await wait_status(http, par, "COMPLETED")

            # transcript from PostgreSQL: one row per agent call (the fake LLM records none
            # through the real LLM activity, so it is an empty list, not an error)
            r = await http.get(f"/v1/runs/{wf}/transcript")
            assert r.status_code == 200 and isinstance(r.json(), list)

            # list: filters and pagination
            async with asyncio.timeout(20):
                while True:
                    r = await http.get("/v1/runs", params={"page_size": 1})
                    page = r.json()
                    if page["next_page_token"]:
                        break
                    await asyncio.sleep(0.2)
            first = page["runs"][0]["workflow_id"]
            r = await http.get(
                "/v1/runs", params={"page_size": 1, "page_token": page["next_page_token"]}
            )
            assert r.status_code == 200 and r.json()["runs"][0]["workflow_id"] != first
            # the session's dev server holds other tests' runs: only this test's count
            mine = {"started_after": began.isoformat()}
            async with asyncio.timeout(20):
                while True:
                    r = await http.get("/v1/runs", params={"pattern": "parallel", **mine})
                    ids = [row["workflow_id"] for row in r.json()["runs"]]
                    if ids:
                        break
                    await asyncio.sleep(0.2)
            assert ids == [par]
            r = await http.get("/v1/runs", params={"pattern": "sequential", **mine})
            assert wf in {row["workflow_id"] for row in r.json()["runs"]}
            r = await http.get("/v1/runs", params={"page_token": "!!not-a-token!!"})
            problem(r, 422, "InvalidInput")

            # a document stored first, then referenced
            r = await http.post(
                "/v1/documents", content="Quarterly notes.", headers={"Content-Type": "text/plain"}
            )
            assert r.status_code == 201, r.text
            doc = r.json()["document_id"]
            r = await http.post(
                "/v1/runs", json={"task": "Summarise", "agents": ["writer"], "document_id": doc}
            )
            assert r.status_code == 202, r.text
            call = await _wait_for_call(fake_llm, "Summarise")
            assert "Quarterly notes." in call.document

            # cancel a run waiting at a gate
            plan_with_gate = {
                "task": "Wait",
                "plan": {
                    "pattern": "sequential",
                    "steps": ["writer", {"kind": "gate", "name": "ok", "approvers": ["alice"]}],
                },
            }
            r = await http.post("/v1/runs", json=plan_with_gate)
            waiting = r.json()["workflow_id"]
            await wait_for_gate(http, waiting)
            r = await http.post(f"/v1/runs/{waiting}/cancel")
            assert r.status_code == 202
            await wait_status(http, waiting, "CANCELED")

            # approvals: list, refuse an unauthorised user, approve
            r = await http.post("/v1/runs", json=plan_with_gate)
            gated = r.json()["workflow_id"]
            await wait_for_gate(http, gated)
            async with asyncio.timeout(20):  # visibility (ChorusAwaiting) is eventually consistent
                while True:
                    r = await http.get("/v1/approvals", params={"user": "alice"})
                    assert r.status_code == 200, r.text
                    if gated in {g["workflow_id"] for g in r.json()}:
                        break
                    await asyncio.sleep(0.2)
            r = await http.get("/v1/approvals", params={"user": "mallory"})
            assert gated not in {g["workflow_id"] for g in r.json()}
            r = await http.post(
                f"/v1/runs/{gated}/gates/ok", json={"user": "mallory", "decision": "approve"}
            )
            assert r.status_code in (403, 422), r.text
            r = await http.post(
                f"/v1/runs/{gated}/gates/ok",
                json={"user": "alice", "decision": "approve", "comment": "fine"},
            )
            assert r.status_code == 200, r.text
            assert r.json()["decided_by"] == "alice"
            await wait_status(http, gated, "COMPLETED")

            r = await http.get("/v1/agents")
            assert set(r.json()) >= {"writer", "critic"}
            r = await http.get("/v1/costs")
            assert r.status_code == 200, r.text
            r = await http.get("/v1/runs/no-such-run")
            problem(r, 404, "NotFound")


async def _wait_for_call(fake_llm: Any, task: str) -> Any:
    async with asyncio.timeout(20):
        while True:
            for call in fake_llm.calls:
                if call.task == task:
                    return call
            await asyncio.sleep(0.05)


async def wait_for_gate(http: httpx.AsyncClient, workflow_id: str) -> None:
    async with asyncio.timeout(20):
        while True:
            r = await http.get(f"/v1/runs/{workflow_id}")
            progress = r.json().get("progress") or {}
            if any(g.get("outcome") is None for g in progress.get("gates") or []):
                return
            await asyncio.sleep(0.1)


async def test_auth_failures(client: Any, api_settings: Any, fake_llm: Any) -> None:
    async with _stack(client, api_settings, fake_llm) as (chorus, base):
        reader = await new_key(chorus, api_settings, "reader", ["runs:read"])
        limited = await new_key(chorus, api_settings, "limited", ["runs:read"], rpm=6)
        revoked = await new_key(chorus, api_settings, "old", ["runs:read"])
        from chorus.governance import api_keys

        await api_keys.revoke_key(await chorus.pool(), "old", author="test")
        async with httpx.AsyncClient(base_url=base) as http:
            body = {"task": "t", "agents": ["writer"]}
            r = await http.post("/v1/runs", json=body)
            problem(r, 401, "Unauthenticated")
            assert r.headers["www-authenticate"].startswith("Bearer")
            wrong = "chorus_" + "0" * 16 + "_" + "1" * 64
            for bad in (wrong, "nonsense", revoked, reader[:-1] + "x"):
                r = await http.get("/v1/runs", headers=bearer(bad))
                assert problem(r, 401, "Unauthenticated")["detail"] == "invalid or revoked API key"
            r = await http.post("/v1/runs", json=body, headers={"X-API-Key": reader})
            assert "runs:write" in problem(r, 403, "ScopeMissing")["detail"]
            # rpm=6: a burst of ceil(6 * 10 / 60) = 1 request, then one every 10 s
            statuses = [
                (await http.get("/v1/runs", headers=bearer(limited))).status_code for _ in range(3)
            ]
            assert statuses[0] == 200 and 429 in statuses
            r = await http.get("/v1/runs", headers=bearer(limited))
            problem(r, 429, "RateLimited")
            assert 1 <= int(r.headers["retry-after"]) <= 10
            # health needs no key
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "temporal": "ok",
                "postgresql": "ok",
            }


async def test_bad_input_never_starts_a_run(client: Any, api_settings: Any, fake_llm: Any) -> None:
    began = datetime.now(UTC)
    async with _stack(client, api_settings, fake_llm) as (chorus, base):
        key = await new_key(chorus, api_settings, "ci")
        async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
            r = await http.post(
                "/v1/runs", content=b'{"task": "x", ', headers={"Content-Type": "application/json"}
            )
            assert "invalid JSON" in problem(r, 400, "MalformedJson")["detail"]
            r = await http.post("/v1/runs", json={"task": 5, "agents": "writer"})
            body = problem(r, 422, "InvalidInput")
            assert {e["field"] for e in body["errors"]} == {"task", "agents"}
            r = await http.post(
                "/v1/runs", json={"task": "x", "agents": ["writer"], "min_sucesses": 2}
            )
            assert "min_sucesses" in problem(r, 422, "InvalidInput")["detail"]
            r = await http.post("/v1/runs", json={"task": "x", "agents": ["ghost"]})
            assert "unknown agent(s) ghost" in problem(r, 422, "InvalidInput")["detail"]
            r = await http.post("/v1/runs", json={"task": "x" * 40_001, "agents": ["writer"]})
            assert "the limit is" in problem(r, 422, "InvalidInput")["detail"]
            r = await http.post("/v1/runs", json={"task": "x"})
            assert "exactly one of 'agents' and 'plan'" in problem(r, 422, "InvalidInput")["detail"]
            r = await http.post(
                "/v1/runs", json={"task": "x", "plan": {"pattern": "sequential", "steps": []}}
            )
            assert "non-empty 'steps'" in problem(r, 422, "InvalidInput")["detail"]
            limit = api_settings.api_max_body_bytes
            # declared too large: refused from the header, before any body byte is sent
            status, answer = await raw_request(
                base,
                "POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {key}\r\nContent-Length: {limit + 1}\r\n\r\n",
            )
            assert status == 413 and f"the limit is {limit} bytes" in answer

            # chunked (no Content-Length): refused while reading
            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"task": "'
                for _ in range(limit // 65_536 + 2):
                    yield b"x" * 65_536
                yield b'"}'

            r = await http.post(
                "/v1/runs", content=chunks(), headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 413, r.text
            r = await http.get("/v1/runs", headers={"X-Request-ID": "trace-42"})
            assert r.headers["x-request-id"] == "trace-42"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["cache-control"] == "no-store"
            r = await http.get("/v1/runs", headers={"X-Request-ID": "bad id with spaces"})
            assert len(r.headers["x-request-id"]) == 32
            listed = await http.get(
                "/v1/runs", params={"page_size": 100, "started_after": began.isoformat()}
            )
            assert listed.json()["runs"] == [], "no bad request may start a run"
            assert fake_llm.calls == []


async def test_idempotent_post_under_concurrency(
    client: Any, api_settings: Any, fake_llm: Any
) -> None:
    release = fake_llm.gate("writer")  # the writer waits until released
    async with _stack(client, api_settings, fake_llm) as (chorus, base):
        key = await new_key(chorus, api_settings, "ci")
        other = await new_key(chorus, api_settings, "other")
        idem = uuid.uuid4().hex
        body = {"task": "Once only", "agents": ["writer"]}
        async with httpx.AsyncClient(base_url=base, headers=bearer(key)) as http:
            responses = await asyncio.gather(
                *(
                    http.post("/v1/runs", json=body, headers={"Idempotency-Key": idem})
                    for _ in range(8)
                )
            )
            assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
            ids = {r.json()["workflow_id"] for r in responses}
            runs = {r.json()["run_id"] for r in responses}
            assert len(ids) == 1 and len(runs) == 1
            (wf,) = ids
            # later retries find it too, and say so
            again = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": idem})
            assert again.status_code == 202 and again.json()["replayed"] is True
            assert again.json()["run_id"] in runs
            # the same key with another request is refused
            r = await http.post(
                "/v1/runs", json={**body, "task": "Another"}, headers={"Idempotency-Key": idem}
            )
            problem(r, 422, "IdempotencyKeyReused")
            # another API key with the same Idempotency-Key gets its own run
            r = await http.post(
                "/v1/runs", json=body, headers={"Idempotency-Key": idem, **bearer(other)}
            )
            assert r.status_code == 202 and r.json()["workflow_id"] != wf
            release.set()
            await wait_status(http, wf, "COMPLETED")
            again = await http.post("/v1/runs", json=body, headers={"Idempotency-Key": idem})
            assert again.json()["workflow_id"] == wf and again.json()["replayed"] is True
        started = [c for c in fake_llm.calls if c.task == "Once only" and c.agent == "writer"]
        assert len(started) == 2  # one per API key


async def test_drafts_over_http(client: Any, api_settings: Any, fake_llm: Any) -> None:
    async with _stack(client, api_settings, fake_llm) as (chorus, base):
        key = await new_key(chorus, api_settings, "editors", ["drafts:read", "drafts:edit"])
        async with httpx.AsyncClient(base_url=base, headers=bearer(key), timeout=30) as http:
            r = await http.post(
                "/v1/drafts",
                json={
                    "title": "Launch post",
                    "owner": "alice",
                    "content": "Hello world.",
                    "collaborators": {"bob": "editor", "rita": "reviewer"},
                },
            )
            assert r.status_code == 201, r.text
            draft = r.json()["draft_id"]
            r = await http.get(f"/v1/drafts/{draft}", params={"user": "bob"})
            assert r.status_code == 200 and r.json()["content"] == "Hello world."
            r = await http.get(f"/v1/drafts/{draft}", params={"user": "mallory"})
            problem(r, 403, "PermissionDenied")

            events: list[tuple[str, dict[str, Any]]] = []

            async def follow() -> None:
                async with http.stream(
                    "GET", f"/v1/drafts/{draft}/events", params={"user": "alice"}
                ) as stream:
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    name = ""
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            events.append((name, json.loads(line[6:])))
                            if name == "version" and events[-1][1]["version"] >= 3:
                                return

            follower = asyncio.create_task(follow())
            r = await http.post(
                f"/v1/drafts/{draft}/edits",
                json={
                    "user": "bob",
                    "base_version": 1,
                    "edit": {"start": 0, "end": 5, "text": "Hi"},
                    "summary": "shorter",
                },
            )
            assert r.status_code == 200, r.text and r.json()["version"] == 2
            r = await http.post(
                f"/v1/drafts/{draft}/edits",
                json={"user": "alice", "base_version": 1, "content": "Overwrite all."},
            )
            problem(r, 409, "EditConflict")
            r = await http.post(
                f"/v1/drafts/{draft}/edits",
                json={"user": "rita", "base_version": 2, "content": "Reviewer edit"},
            )
            problem(r, 403, "PermissionDenied")
            r = await http.post(
                f"/v1/drafts/{draft}/comments", json={"user": "rita", "text": "Say more."}
            )
            assert r.status_code == 202
            r = await http.post(
                f"/v1/drafts/{draft}/edits",
                json={"user": "alice", "base_version": 2, "content": "Hi world, more."},
            )
            assert r.status_code == 200 and r.json()["version"] == 3
            await asyncio.wait_for(follower, 20)
            versions = [(e["version"], e["author"]) for n, e in events if n == "version"]
            assert versions[-2:] == [(2, "bob"), (3, "alice")]
            assert [e for n, e in events if n == "version"][-1]["content"] == "Hi world, more."
            # an agent revision, as the CLI's `draft revise`
            r = await http.post(
                f"/v1/drafts/{draft}/revisions",
                json={"user": "alice", "base_version": 3, "instruction": "Tighten it."},
            )
            assert r.status_code == 200, r.text
            assert r.json()["version"] == 4
            r = await http.post(
                f"/v1/drafts/{draft}/revisions",
                json={"user": "alice", "base_version": 4, "instruction": "x", "agent": "ghost"},
            )
            assert "unknown agent" in problem(r, 422, "InvalidInput")["detail"]
            r = await http.post(
                f"/v1/drafts/{draft}/collaborators",
                json={"user": "alice", "collaborator": "carl", "role": "viewer"},
            )
            assert r.status_code == 202
            async with asyncio.timeout(10):
                while True:
                    r = await http.get(f"/v1/drafts/{draft}", params={"user": "carl"})
                    if r.status_code == 200:
                        break
                    await asyncio.sleep(0.1)
            for action in ("submit",):
                r = await http.post(f"/v1/drafts/{draft}/{action}", json={"user": "alice"})
                assert r.status_code == 200, r.text
            r = await http.post(f"/v1/drafts/{draft}/approve", json={"user": "rita"})
            assert r.status_code == 200, r.text
            r = await http.post(f"/v1/drafts/{draft}/publish", json={"user": "alice"})
            assert r.status_code == 200, r.text
            r = await http.get(f"/v1/drafts/{draft}", params={"user": "alice"})
            assert r.json()["status"] == "published"
            r = await http.get(f"/v1/drafts/{draft}/revisions", params={"user": "alice"})
            assert [(x["version"], x["author"]) for x in r.json()][:3] == [
                (1, "alice"),
                (2, "bob"),
                (3, "alice"),
            ]
            async with asyncio.timeout(10):
                while True:
                    r = await http.get(f"/v1/drafts/{draft}/comments", params={"user": "bob"})
                    if r.json():
                        break
                    await asyncio.sleep(0.1)
            assert r.json()[0]["text"] == "Say more."
            # a drafts key cannot start runs
            r = await http.post("/v1/runs", json={"task": "x", "agents": ["writer"]})
            problem(r, 403, "ScopeMissing")


async def test_openapi_and_docs(client: Any, api_settings: Any, fake_llm: Any) -> None:
    async with _stack(client, api_settings, fake_llm) as (_chorus, base):
        async with httpx.AsyncClient(base_url=base) as http:
            spec = (await http.get("/openapi.json")).json()
            paths = set(spec["paths"])
            assert {
                "/v1/runs",
                "/v1/runs/{workflow_id}",
                "/v1/runs/{workflow_id}/cancel",
                "/v1/runs/{workflow_id}/transcript",
                "/v1/runs/{workflow_id}/events",
                "/v1/costs",
                "/v1/agents",
                "/v1/drafts",
                "/v1/drafts/{draft_id}/edits",
                "/v1/approvals",
            } <= paths
            # request and response bodies come from the SDK's pydantic models
            assert "RunProgress" in spec["components"]["schemas"]
            assert "DraftView" in spec["components"]["schemas"]
            docs = await http.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
            page = await http.get("/drafts/draft-x")
            assert page.status_code == 200 and "/static/draft.js" in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]


def test_steps_are_the_same_as_the_cli() -> None:
    from starter.api.app import _steps
    from starter.api.schemas import RunCreate

    pattern, steps, _, _ = _steps(RunCreate(task="t", agents=["a", "b>c", "d|e"]))
    assert pattern == "sequential" and [type(s).__name__ for s in steps] == [
        "AgentStep",
        "SequentialStep",
        "ParallelStep",
    ]
    assert isinstance(steps[0], AgentStep) and not isinstance(steps[0], GateStep)


async def test_cors_is_off_unless_origins_are_listed(
    client: Any, make_settings: Any, fake_llm: Any
) -> None:
    origin = "https://app.example.com"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    for origins, allowed in (("", False), (f"{origin}, https://other.example", True)):
        settings = make_settings(
            catalog("writer"), api_key_secret=SERVER_SECRET, api_cors_origins=origins
        )
        async with _stack(client, settings, fake_llm) as (_chorus, base):
            async with httpx.AsyncClient(base_url=base) as http:
                r = await http.options("/v1/runs", headers=preflight)
                assert (r.headers.get("access-control-allow-origin") == origin) is allowed
                r = await http.get("/healthz", headers={"Origin": origin})
                assert ("access-control-allow-origin" in r.headers) is allowed
