"""``chorus approvals`` and the SDK's ApprovalsClient; ``chorus status`` with control steps.

Argument errors are checked without a server (the CLI refuses them before connecting). The
client is driven against a small test double of a waiting run (``GateHolder`` below: the
``progress``/``gates`` queries, the ``decide`` update with a validator, ``ChorusAwaiting``),
so these tests do not depend on the run workflows; the end-to-end gate tests with the real
workflows live under ``tests/workflows``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from rich.console import Console
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner, Result

from chorus.config.settings import Settings
from chorus.contracts.control import (
    DECIDE_UPDATE,
    GATES_QUERY,
    ControlOutcome,
    GateDecision,
    GateRecord,
    RouteChoice,
)
from chorus.contracts.models import RunProgress, StepProgress, StepResult
from chorus.contracts.names import AWAITING_ATTR, PROGRESS_QUERY
from chorus.contracts.wire import WireModel
from starter.cli import app, support
from starter.cli.run_commands import _progress_view
from starter.sdk import ChorusInputError
from starter.sdk.approvals_client import ApprovalsClient

# --- argument errors, no server ----------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    """``chorus ...`` in-process; Temporal points nowhere (input is refused before connecting)."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.delenv("CHORUS_USER", raising=False)
    runner = CliRunner()

    def chorus(*args: str, stdin: bytes | str | None = None) -> Result:
        return runner.invoke(app, list(args), input=stdin)

    yield chorus


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "run-1", "--gate", "Legal", "--user", "alice"], "gate: String should match"),
        (["reject", "run-1", "--gate", "legal", "--user", "a b"], "user: String should match"),
        (
            ["approve", "run-1", "--gate", "legal", "--user", "alice", "--comment", "x" * 4001],
            "comment: String should have at most 4000 characters",
        ),
    ],
)
def test_decision_arguments_are_refused_before_connecting(cli, args: list[str], message: str):
    result = cli("approvals", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "127.0.0.1:1" not in result.stderr  # refused before any connection attempt


def test_decision_errors_as_json(cli):
    result = cli("approvals", "approve", "run-1", "--gate", "Legal", "--user", "alice", "--json")
    assert result.exit_code == 2
    assert "gate: String should match" in json.loads(result.stdout)["error"]


def test_a_decision_needs_gate_and_user(cli):
    assert cli("approvals", "approve", "run-1", "--user", "alice").exit_code == 2
    missing_user = cli("approvals", "approve", "run-1", "--gate", "legal")
    assert missing_user.exit_code == 2 and "--user" in missing_user.stderr


def test_edit_content_file_errors(cli: Callable[..., Result], tmp_path: Path):
    def edit(source: str, stdin: bytes | None = None) -> Result:
        args = ["approvals", "edit", "run-1", "--gate", "legal", "--user", "alice"]
        return cli(*args, "--content-file", source, stdin=stdin)

    missing = edit(str(tmp_path / "nope.txt"))
    assert missing.exit_code == 2 and "--content-file: cannot read" in missing.stderr
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00text")
    not_text = edit(str(binary))
    assert not_text.exit_code == 2 and f"--content-file: {binary} is not UTF-8" in not_text.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    blank = edit(str(empty))
    assert blank.exit_code == 2 and "content: an 'edit' decision needs" in blank.stderr
    from_stdin = edit("-", stdin=b"\xc3(")
    assert from_stdin.exit_code == 2 and "--content-file: - is not UTF-8" in from_stdin.stderr
    blank_stdin = edit("-", stdin=b"   ")
    assert blank_stdin.exit_code == 2 and "needs the replacement text" in blank_stdin.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sequential", "--loop-until", "verdict"], "--loop-until: 'verdict' has no '='"),
        (["sequential", "--max-iterations", "0"], "--max-iterations: 0, must be between 1 and 50"),
        (["sequential", "--max-cost-usd", "1"], "--max-cost-usd: only shapes a loop"),
        (["sequential", "--loop-until", "x=1", "--loop-output", "ed"], "--loop-output: 'ed'"),
        (["parallel", "--loop-until", "x=1"], "--loop-until: loops the --agents of a sequential"),
    ],
)
def test_loop_flags_are_checked_before_connecting(cli, args: list[str], message: str):
    pattern, *flags = args
    result = cli("run", pattern, "--agents", "writer,critic", "--task", "t", *flags)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


# --- rendering of the new kinds ----------------------------------------------------------------

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def record(**fields: Any) -> GateRecord:
    values: dict[str, Any] = {
        "gate": "legal",
        "key": "r:1",
        "workflow_id": "seq-launch-1",
        "question": "Publish this?",
        "subject_name": "writer",
        "subject_preview": "Launch note:\n" + "word " * 40,
        "approvers": ["alice", "role:legal"],
        "allowed_users": ["alice", "lee"],
        "opened_at": NOW,
    }
    return GateRecord(**(values | fields))


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(support, "out", Console(file=buffer, width=160, color_system=None))
    return buffer


def test_control_steps_print_what_ended_them(printed: io.StringIO):
    iteration = StepResult(
        name="iteration 1",
        kind="iteration",
        status="succeeded",
        steps=[StepResult(name="writer", status="succeeded", provider="local", model="m")],
    )
    steps = [
        StepResult(
            name="loop(writer > critic)",
            kind="loop",
            status="succeeded",
            steps=[iteration],
            control=ControlOutcome(ended_by="predicate", rounds=2, continued_as_new=1),
        ),
        StepResult(
            name="router triage(billing / tech)",
            kind="router",
            status="succeeded",
            control=ControlOutcome(
                ended_by="done",
                rounds=1,
                choices=[
                    RouteChoice(by="triage", choice="billing", reason="asks about\nan invoice"),
                    RouteChoice(by="triage", choice="done"),
                ],
            ),
        ),
        StepResult(
            name="legal",
            kind="gate",
            status="succeeded",
            control=ControlOutcome(
                ended_by="approved",
                gate=record(
                    outcome="approved", decided_by="alice", comment="ok [b]", decided_at=NOW
                ),
            ),
        ),
        StepResult(
            name="timed", kind="gate", status="failed", control=ControlOutcome(ended_by="timed_out")
        ),
        StepResult(name="handoff(a -> b)", kind="handoff", status="failed", error="HandoffLimit"),
    ]
    support.print_steps(steps)
    text = printed.getvalue()
    assert (
        "loop of step 1 (loop(writer > critic)): ended by predicate after 2 iterations, "
        "continued as new 1x" in text
    )
    assert "router of step 2 (router triage(billing / tech)): ended by done after 1 route" in text
    assert "  triage → billing: asks about an invoice" in text
    assert "  triage → done" in text
    assert "gate of step 3 (legal): approved by alice at 2026-12-01 09:30:00 — ok [b]" in text
    assert "gate of step 4 (timed): timed_out" in text
    assert "1.1.1" in text  # the iteration's steps are numbered under the loop
    table = support.steps_table(steps)
    providers = list(table.columns[2].cells)
    assert providers[:3] == ["child workflow", "", "local:m"]  # loop, iteration 1, writer
    assert providers[4] == "gate"


def test_status_shows_notes_and_pending_gates():
    progress = RunProgress(
        pattern="sequential",
        started_at=NOW,
        steps=[
            StepProgress(name="analyst", status="succeeded", provider="local"),
            StepProgress(
                name="loop(writer > critic)",
                kind="loop",
                status="running",
                child_workflow_id="seq-launch-1-s2",
                note="iteration 2 of 3",
            ),
        ],
        gates=[record(), record(gate="done-one", outcome="approved")],
    )
    buffer = io.StringIO()
    Console(file=buffer, width=160, color_system=None).print(_progress_view(progress, 3.0))
    view = buffer.getvalue()
    assert "note" in view and "iteration 2 of 3" in view
    assert "waiting for approval at gate legal" in view and "done-one" not in view
    plain = RunProgress(pattern="sequential", started_at=NOW, steps=[StepProgress(name="a")])
    buffer = io.StringIO()
    Console(file=buffer, width=160, color_system=None).print(_progress_view(plain, 1.0))
    assert "note" not in buffer.getvalue()

    inner = record(workflow_id="seq-launch-1-s2", deadline=NOW + timedelta(hours=1))
    lines = support.pending_gate_lines("seq-launch-1", [record(approvers=[]), inner])
    assert lines[0] == "waiting at gate legal: Publish this?"
    assert lines[1] == "  approvers: anyone"
    assert lines[2].startswith("  under review: writer: Launch note: word word")
    assert len(lines[2]) <= len("  under review: writer: ") + support.PREVIEW_CHARS
    assert lines[3] == "  decide with: chorus approvals approve seq-launch-1 --gate legal --user U"
    assert lines[4] == "waiting at gate legal (in seq-launch-1-s2): Publish this?"
    assert lines[5] == "  approvers: alice, role:legal; at 2026-12-01 10:30:00 it will fail"


# --- the client against a waiting workflow -----------------------------------------------------


class HolderSpec(WireModel):
    """What the test double waits at: its gates, and a child that waits at others."""

    gates: list[dict[str, Any]] = Field(default_factory=list)
    child_gates: list[dict[str, Any]] | None = None


@workflow.defn(name="ApprovalsTestGateHolder")
class GateHolder:
    """A stand-in for a run waiting at gates (as ``workflows/_gates.py`` behaves)."""

    def __init__(self) -> None:
        self.gates: list[GateRecord] = []
        self.steps: list[StepProgress] = []

    @workflow.run
    async def run(self, spec: HolderSpec) -> list[GateRecord]:
        info = workflow.info()
        self.gates = [
            GateRecord(
                **{
                    "key": f"{info.run_id}:{n}",
                    "workflow_id": info.workflow_id,
                    "question": "Approve this?",
                    "opened_at": workflow.now(),
                    "subject_name": "writer",
                    "subject_preview": "draft text",
                    **g,
                }
            )
            for n, g in enumerate(spec.gates, 1)
        ]
        self._awaiting()
        child = None
        if spec.child_gates is not None:
            child_id = f"{info.workflow_id}-s1"
            self.steps = [
                StepProgress(
                    name="loop(writer)",
                    kind="loop",
                    status="running",
                    child_workflow_id=child_id,
                    note="iteration 1 of 2",
                )
            ]
            child = await workflow.start_child_workflow(
                "ApprovalsTestGateHolder",
                HolderSpec(gates=spec.child_gates),
                id=child_id,
                result_type=list[GateRecord],
            )
        await workflow.wait_condition(lambda: not any(g.pending for g in self.gates))
        if child is not None:
            await child
        return self.gates

    def _awaiting(self) -> None:
        names = sorted(g.gate for g in self.gates if g.pending)
        workflow.upsert_search_attributes(
            [AWAITING_ATTR.value_set(names) if names else AWAITING_ATTR.value_unset()]
        )

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> RunProgress:
        return RunProgress(
            pattern="sequential", started_at=workflow.now(), steps=self.steps, gates=self.gates
        )

    @workflow.query(name=GATES_QUERY)
    def gate_records(self) -> list[GateRecord]:
        return self.gates

    @workflow.update(name=DECIDE_UPDATE)
    def decide(self, decision: GateDecision) -> GateRecord:
        gate = next(g for g in self.gates if g.gate == decision.gate and g.pending)
        gate.outcome = {"approve": "approved", "reject": "rejected", "edit": "edited"}[
            decision.decision
        ]  # type: ignore[assignment]
        gate.decided_by, gate.comment = decision.user, decision.comment
        gate.decided_at = workflow.now()
        self._awaiting()
        return gate

    @decide.validator
    def _check(self, decision: GateDecision) -> None:
        if not any(g.gate == decision.gate and g.pending for g in self.gates):
            raise ApplicationError(f"gate {decision.gate!r} is not waiting", type="InvalidInput")
        if "veto" in decision.comment:
            raise ApplicationError("comments saying veto are refused here", type="InvalidInput")


async def _eventually_pending(
    approvals: ApprovalsClient, ids: set[str], user: str | None = None
) -> list[GateRecord]:
    """``pending()`` restricted to ``ids``, once visibility shows all of them (<= 15 s)."""
    found: list[GateRecord] = []
    for _ in range(150):
        found = [r for r in await approvals.pending(user=user) if r.workflow_id in ids]
        if {r.workflow_id for r in found} >= ids:
            return found
        await asyncio.sleep(0.1)
    return found


@pytest.fixture
async def holder(client: Client):
    """Start waiting workflows on a worker of their own: ``start(spec) -> workflow id``."""
    queue = f"approvals-{uuid.uuid4().hex[:8]}"
    started: list[str] = []

    async def start(spec: HolderSpec) -> str:
        workflow_id = f"approvals-test-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(
            "ApprovalsTestGateHolder", spec, id=workflow_id, task_queue=queue
        )
        started.append(workflow_id)
        return workflow_id

    async with Worker(
        client,
        task_queue=queue,
        workflows=[GateHolder],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield start
        for workflow_id in started:
            try:
                await client.get_workflow_handle(workflow_id).terminate("test over")
            except Exception:
                pass


def approvals_client(client: Client) -> ApprovalsClient:
    async def no_pool() -> Any:
        raise AssertionError("approvals never use PostgreSQL")

    return ApprovalsClient(client, Settings(), no_pool)


async def test_pending_find_and_decide(client: Client, holder):
    approvals = approvals_client(client)
    run_id = await holder(
        HolderSpec(
            gates=[{"gate": "ok", "approvers": []}],
            child_gates=[{"gate": "legal", "approvers": ["alice"], "allowed_users": ["alice"]}],
        )
    )
    child_id = f"{run_id}-s1"
    everything = await _eventually_pending(approvals, {run_id, child_id})
    assert sorted((r.workflow_id, r.gate) for r in everything) == [
        (run_id, "ok"),
        (child_id, "legal"),
    ]
    for_bob = await approvals.pending(user="bob")
    assert [r.gate for r in for_bob if r.workflow_id in (run_id, child_id)] == ["ok"]

    found = await approvals.find_gate(run_id, "legal")
    assert found.workflow_id == child_id and found.pending
    assert {r.gate for r in await approvals.pending_in(run_id)} == {"ok", "legal"}
    with pytest.raises(ChorusInputError) as nope:
        await approvals.find_gate(run_id, "nope")
    assert str(nope.value) == (
        f"run {run_id} has no pending gate 'nope'; pending gates: ok, legal (in {child_id})"
    )
    with pytest.raises(ChorusInputError, match="user: 'bob' may not decide gate 'legal'"):
        await approvals.decide(run_id, "legal", "approve", "bob")
    with pytest.raises(ChorusInputError, match="content: an 'edit' decision needs"):
        await approvals.decide(run_id, "legal", "edit", "alice")
    with pytest.raises(ChorusInputError, match="decision refused: comments saying veto"):
        await approvals.decide(run_id, "legal", "approve", "alice", comment="veto!")

    decided = await approvals.decide(run_id, "legal", "edit", "alice", "tighter", "New text")
    assert (decided.outcome, decided.decided_by, decided.comment) == ("edited", "alice", "tighter")
    assert decided.workflow_id == child_id
    with pytest.raises(ChorusInputError, match=r"no pending gate 'legal'; pending gates: ok$"):
        await approvals.decide(run_id, "legal", "approve", "alice")


async def test_unknown_and_finished_runs(client: Client, holder):
    approvals = approvals_client(client)
    with pytest.raises(LookupError, match="no run with workflow id 'approvals-test-none'"):
        await approvals.find_gate("approvals-test-none", "ok")
    with pytest.raises(ChorusInputError, match=r"workflow_id: .* is not a valid id"):
        await approvals.find_gate("bad id!", "ok")
    run_id = await holder(HolderSpec(gates=[{"gate": "ok"}]))
    await approvals.decide(run_id, "ok", "reject", "carol")
    await client.get_workflow_handle(run_id).result()
    with pytest.raises(ChorusInputError, match=f"run {run_id} is COMPLETED, not running"):
        await approvals.decide(run_id, "ok", "approve", "carol")


async def _chorus(*args: str, address: str) -> tuple[int, str, str]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_lists_and_decides(client: Client, holder, tmp_path):
    address = client.service_client.config.target_host
    run_id = await holder(
        HolderSpec(gates=[{"gate": "ok"}], child_gates=[{"gate": "legal", "approvers": []}])
    )
    await _eventually_pending(approvals_client(client), {f"{run_id}-s1"})

    code, out, err = await _chorus("approvals", "list", "--json", address=address)
    assert code == 0, err
    assert any(r["workflow_id"] == f"{run_id}-s1" for r in json.loads(out))
    code, out, err = await _chorus("status", run_id, address=address)
    assert code == 0, err
    assert "iteration 1 of 2" in out
    assert f"decide with: chorus approvals approve {run_id} --gate legal --user U" in out

    content = tmp_path / "edited.txt"
    content.write_text("The edited text.\n")
    code, out, err = await _chorus(
        "approvals", "edit", run_id, "--gate", "legal", "--user", "dana",
        "--content-file", str(content), "--comment", "shorter",
        address=address,
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == (f"gate legal of {run_id} (in {run_id}-s1): edited by dana — shorter")
    code, out, err = await _chorus(
        "approvals", "approve", run_id, "--gate", "legal", "--user", "dana", address=address
    )
    assert code == 2 and "no pending gate 'legal'" in err
