"""Approval gates: a run stops and waits for people to approve, reject or edit (workflow code).

A gate step records itself in PostgreSQL (``chorus.open_gate``, which also expands the
approvers' roles and pins them in the history), adds its name to the workflow's
``ChorusAwaiting`` search attribute, announces itself on the run's callback, and waits on a
condition, which costs nothing but history however long it waits. A decision arrives as the
``decide`` update; its validator refuses an unknown or decided gate, a user who may not decide
and a bad edit *before* the update is accepted, so a refused decision never enters the history.
The outcome is recorded (``chorus.close_gate``) and the gate's step result carries the text
that flows on: the same text (approve), the replacement (edit), or a failure (reject).
"""

from __future__ import annotations

from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from chorus.contracts import activities, errors
    from chorus.contracts.control import (
        DECIDE_UPDATE,
        GATE_PREVIEW_CHARS,
        GATES_QUERY,
        CloseGateInput,
        ControlOutcome,
        GateDecision,
        GateRecord,
        GateStep,
        OpenGateInput,
    )
    from chorus.contracts.models import PriorOutput, StepResult
    from chorus.contracts.names import AWAITING_ATTR

if TYPE_CHECKING:
    from workflows._base import RunState

GATE_RECORD_TIMEOUT = timedelta(seconds=30)
"""Start-to-close of one attempt of ``chorus.open_gate``/``chorus.close_gate``."""

_OUTCOME = MappingProxyType({"approve": "approved", "reject": "rejected", "edit": "edited"})


class GateKeeping:
    """The ``decide`` update, the ``gates`` query and the gate step, for run workflows."""

    state: RunState

    @workflow.query(name=GATES_QUERY)
    def gates(self) -> list[GateRecord]:
        """This workflow's gates, pending (``outcome`` is ``None``) and decided."""
        return self.state.gates

    @workflow.update(name=DECIDE_UPDATE)
    async def decide(self, decision: GateDecision) -> GateRecord:
        """Decide a pending gate: approve, reject, or edit the text that flows on.

        Returns:
            The gate's record with the outcome set (recorded in PostgreSQL right after).

        Raises:
            ApplicationError: ``InvalidInput`` when another decision got there first (the
                validator refuses everything else before the update is accepted).
        """
        record = self._pending_gate(decision.gate)
        if record is None:
            raise ApplicationError(
                f"gate {decision.gate!r} was decided meanwhile", type=errors.INVALID_INPUT
            )
        record.outcome = _OUTCOME[decision.decision]  # type: ignore[assignment]
        record.decided_by = decision.user
        record.comment = decision.comment
        record.decided_at = workflow.now()
        self.state.gate_edits[record.key] = decision.content
        return record

    @decide.validator
    def _validate_decision(self, decision: GateDecision) -> None:
        """Refuse a decision before it is accepted (it then never enters the history).

        Raises:
            ApplicationError: ``InvalidInput`` naming what is wrong: no such pending gate (the
                message lists the pending ones), or a user who may not decide.
        """
        record = self._pending_gate(decision.gate)
        if record is None:
            pending = ", ".join(g.gate for g in self.state.gates if g.pending) or "none"
            raise ApplicationError(
                f"gate {decision.gate!r} is not waiting for a decision in "
                f"{workflow.info().workflow_id} (pending gates: {pending})",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        if not record.may_decide(decision.user):
            raise ApplicationError(
                f"user {decision.user!r} may not decide gate {decision.gate!r} (approvers: "
                f"{', '.join(record.approvers)})",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )

    def _pending_gate(self, name: str) -> GateRecord | None:
        return next((g for g in self.state.gates if g.gate == name and g.pending), None)

    def _upsert_awaiting(self) -> None:
        names = sorted({g.gate for g in self.state.gates if g.pending})
        workflow.upsert_search_attributes(
            [AWAITING_ATTR.value_set(names) if names else AWAITING_ATTR.value_unset()]
        )

    async def _run_gate(self, step: GateStep, context: list[PriorOutput]) -> StepResult:
        """Wait at a gate until a decision or its time-out; the result carries the text on.

        The text under review is the latest earlier output (or, at the start of a plan, the
        task's document, else the task). Approve passes it on; edit passes the replacement;
        reject and a ``fail`` time-out fail the step (``GateRejected``/``GateTimedOut``).
        """
        s = self.state
        info = workflow.info()
        s.gate_seq += 1
        if context:
            subject_name: str | None = context[-1].name
            text = context[-1].output
        else:
            subject_name = s.subject.document_name or ("document" if s.subject.document else None)
            text = s.subject.document or s.subject.task
        opened = workflow.now()
        record = GateRecord(
            gate=step.name,
            key=f"{info.run_id}:{s.gate_seq}",
            workflow_id=info.workflow_id,
            question=step.question,
            subject_name=subject_name,
            subject_preview=text[:GATE_PREVIEW_CHARS],
            approvers=list(step.approvers),
            opened_at=opened,
            deadline=opened + timedelta(seconds=step.timeout_s) if step.timeout_s else None,
            on_timeout=step.on_timeout,
        )
        record.allowed_users = await self._record_gate(
            activities.Approvals.open_gate,
            OpenGateInput(record=record, root_workflow_id=s.root_workflow_id, subject=text),
            f"Gate {step.name}: waiting for {', '.join(step.approvers) or 'anyone'}",
        )
        s.gates.append(record)
        self._upsert_awaiting()
        self._gate_changed()
        self._announce_gate(record)
        await self._wait_for_decision(step, record)
        await self._record_gate(
            activities.Approvals.close_gate,
            CloseGateInput(record=record, content=s.gate_edits.get(record.key)),
            f"Gate {step.name}: {record.outcome}"
            + (f" by {record.decided_by}" if record.decided_by else ""),
        )
        self._upsert_awaiting()
        self._gate_changed()
        return self._gate_result(step, record, subject_name, text)

    async def _wait_for_decision(self, step: GateStep, record: GateRecord) -> None:
        """Wait for the ``decide`` update; remind once; apply ``on_timeout`` at the deadline."""
        if step.remind_after_s and (step.timeout_s is None or step.remind_after_s < step.timeout_s):
            try:
                await workflow.wait_condition(
                    lambda: not record.pending, timeout=timedelta(seconds=step.remind_after_s)
                )
            except TimeoutError:
                self._announce_gate(record)
        remaining = None
        if record.deadline is not None:
            remaining = max(record.deadline - workflow.now(), timedelta(seconds=0))
        try:
            await workflow.wait_condition(lambda: not record.pending, timeout=remaining)
        except TimeoutError:
            record.outcome = "timed_out"
            record.decided_at = workflow.now()
            record.comment = (
                f"no decision within {step.timeout_s:g} s; on_timeout: {step.on_timeout}"
            )

    def _gate_result(
        self, step: GateStep, record: GateRecord, subject_name: str | None, text: str
    ) -> StepResult:
        timed_out = record.outcome == "timed_out"
        passes = record.outcome in ("approved", "edited") or (
            timed_out and step.on_timeout == "approve"
        )
        output = self.state.gate_edits.get(record.key) or text
        error = error_type = None
        if not passes:
            who = f" by {record.decided_by}" if record.decided_by else ""
            why = f": {record.comment}" if record.comment else ""
            if timed_out and step.on_timeout == "fail":
                error_type = errors.GATE_TIMED_OUT
                error = f"gate {step.name} timed out{why}"
            else:
                error_type = errors.GATE_REJECTED
                error = f"gate {step.name} rejected{who}{why}"
        return StepResult(
            name=step.name,
            kind="gate",
            status="succeeded" if passes else "failed",
            output=output if passes else "",
            error=error,
            error_type=error_type,
            latency_ms=((record.decided_at or workflow.now()) - record.opened_at).total_seconds()
            * 1000.0,
            control=ControlOutcome(ended_by=record.outcome or "pending", gate=record),
        )

    async def _record_gate(self, activity: object, arg: object, summary: str) -> list[str]:
        """Run ``chorus.open_gate``/``chorus.close_gate`` as a local activity.

        Retried until PostgreSQL answers; a cancellation meanwhile does not stop the record.
        """
        result = await self._bookkeeping(  # type: ignore[attr-defined]
            activity,
            arg,
            start_to_close_timeout=GATE_RECORD_TIMEOUT,
            summary=summary[:200],
            shield=True,
        )
        return list(result or [])

    def _announce_gate(self, record: GateRecord) -> None:
        """Hook: POST the pending gate to the run's callback (set by the run workflow base)."""

    def _gate_changed(self) -> None:
        """Hook: the workflow republishes its details (set by the run workflow base)."""
