"""Approvals: the gates runs wait at, and people's decisions on them.

A run's ``gate`` step stops and waits for a decision. The workflow that waits (the run, or a
child workflow such as ``<run id>-s2`` for a gate inside a loop) answers the ``gates`` and
``progress`` queries, sets the ``ChorusAwaiting`` search attribute to the names of the gates
it waits at, and takes the decision as the Temporal update ``decide``
(:class:`~chorus.contracts.control.GateDecision`), whose validator refuses a gate that is not
pending, a user who is not an approver, or bad content: nothing enters the history then.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pydantic import ValidationError
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from chorus.contracts import validation
from chorus.contracts.control import DECIDE_UPDATE, GATES_QUERY, GateDecision, GateRecord
from chorus.contracts.models import RunProgress
from chorus.contracts.names import (
    AWAITING_ATTR,
    CONTROL_WORKFLOW,
    PROGRESS_QUERY,
    WORKFLOW_TYPES,
)
from chorus.runtime.converter import describe_decode_error
from starter.sdk.client_base import FocusedClient, input_refusals
from starter.sdk.sdk_errors import ChorusInputError

log = logging.getLogger("chorus.approvals")

PENDING_QUERY = f'{AWAITING_ATTR.name} IS NOT NULL AND ExecutionStatus = "Running"'
"""Visibility query of the workflows waiting at a gate (a cleared ``ChorusAwaiting`` is null)."""
_FALLBACK_QUERY = (
    "WorkflowType IN ("
    + ", ".join(f"'{t}'" for t in (*WORKFLOW_TYPES, CONTROL_WORKFLOW))
    + ') AND ExecutionStatus = "Running"'
)
MAX_CHILD_DEPTH = 6
"""Child-workflow levels :meth:`ApprovalsClient.find_gate` descends below a run."""
QUERY_TIMEOUT = timedelta(seconds=10)
"""How long one query may take (a workflow whose worker is down must not stall a listing)."""
QUERY_CONCURRENCY = 16
"""Workflows queried at once by :meth:`ApprovalsClient.pending`."""


def make_decision(
    gate: str,
    decision: Literal["approve", "reject", "edit"],
    user: str,
    comment: str = "",
    content: str | None = None,
) -> GateDecision:
    """Build the ``decide`` update's argument, control characters stripped from the texts.

    Args:
        gate: The gate's name (``[a-z][a-z0-9_-]*``, <= 64 characters).
        decision: ``approve``, ``reject`` or ``edit``.
        user: Who decides (``alice``, ``alice@example.com``: <= 100 characters).
        comment: Why (<= ``MAX_COMMENT_CHARS`` = 4,000 characters).
        content: The replacement text, required for ``edit`` and refused otherwise
            (<= ``MAX_GATE_CONTENT_CHARS`` = 250,000 characters).

    Raises:
        ChorusInputError: A field breaks its rule or limit; the message names it.
    """
    comment = validation.strip_controls(comment)
    if content is not None:
        content = validation.strip_controls(content)
    try:
        return GateDecision(
            gate=gate, decision=decision, user=user, comment=comment, content=content
        )
    except ValidationError as exc:
        raise ChorusInputError(describe_decode_error(GateDecision, exc)) from None


@dataclass(frozen=True)
class _Found:
    """Gates found under a run: pending records and the workflows that did not answer."""

    pending: list[GateRecord]
    silent: list[str]


class ApprovalsClient(FocusedClient):
    """List the gates waiting for a decision; approve, reject or edit one.

    Reached as ``ChorusClient.approvals`` (and ``ChorusClient.pending_approvals`` /
    ``ChorusClient.decide``).
    """

    async def pending(self, user: str | None = None, limit: int = 100) -> list[GateRecord]:
        """Every gate waiting for a decision, oldest first.

        Lists the running workflows whose ``ChorusAwaiting`` is set (visibility is eventually
        consistent: a gate opened a moment ago may be missing), asks each for its gates and
        keeps the pending ones. A workflow that does not answer (no worker, an older version)
        is skipped with a warning on the ``chorus.approvals`` logger.

        Args:
            user: Keep only the gates this user may decide (an approver, or a gate with no
                approvers); ``None``: all.
            limit: At most this many waiting workflows are asked (1-1,000).

        Raises:
            ChorusInputError: ``limit`` out of range.
            RPCError: Temporal refused the listing (other than for the query syntax).
        """
        if not 1 <= limit <= 1000:
            raise ChorusInputError(f"limit: {limit}, must be between 1 and 1000")
        ids = await self._waiting_workflows(limit)
        slots = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def gates_of(workflow_id: str) -> list[GateRecord]:
            async with slots:
                try:
                    handle = self.client.get_workflow_handle(workflow_id)
                    records: list[GateRecord] = await handle.query(
                        GATES_QUERY, result_type=list[GateRecord], rpc_timeout=QUERY_TIMEOUT
                    )
                    return records
                except (RPCError, WorkflowQueryFailedError, ValueError) as exc:
                    log.warning(
                        "skipped %s: it did not answer the %r query (%s: %s)",
                        workflow_id,
                        GATES_QUERY,
                        type(exc).__name__,
                        exc,
                    )
                    return []

        found = await asyncio.gather(*(gates_of(i) for i in ids))
        records = [r for rs in found for r in rs if r.pending]
        if user is not None:
            records = [r for r in records if r.may_decide(user)]
        return sorted(records, key=lambda r: (r.opened_at, r.workflow_id, r.gate))

    async def _waiting_workflows(self, limit: int) -> list[str]:
        """Ids of the running workflows that wait at a gate (at most ``limit``)."""
        try:
            return [wf.id async for wf in self.client.list_workflows(PENDING_QUERY, limit=limit)]
        except RPCError as exc:
            if exc.status != RPCStatusCode.INVALID_ARGUMENT:
                raise
            # A visibility store without `IS NOT NULL` on keyword lists, or a namespace without
            # ChorusAwaiting: ask every running Chorus workflow instead.
            log.warning("%r refused (%s); asking every running Chorus run", PENDING_QUERY, exc)
            return [wf.id async for wf in self.client.list_workflows(_FALLBACK_QUERY, limit=limit)]

    async def pending_in(self, workflow_id: str) -> list[GateRecord]:
        """The pending gates of one run: its own and its running child workflows'.

        Args:
            workflow_id: The run (or any Chorus workflow of it).

        Raises:
            ChorusInputError: ``workflow_id`` is not a valid id, or the run is not running.
            LookupError: No workflow has that id.
        """
        return (await self._walk(workflow_id)).pending

    async def find_gate(self, workflow_id: str, gate: str) -> GateRecord:
        """The pending gate named ``gate`` of a run, wherever it waits in the run.

        Queries ``progress`` on ``workflow_id``, then on the child workflows of its running
        steps (down to ``MAX_CHILD_DEPTH`` levels): a gate inside a loop waits in the loop's
        child workflow (:attr:`GateRecord.workflow_id` says which).

        Args:
            workflow_id: The run's workflow id (or the child workflow's).
            gate: The gate's name.

        Raises:
            ChorusInputError: The run is not running, or has no pending gate of that name
                (the message lists the pending ones).
            LookupError: No workflow has that id.
        """
        found = await self._walk(workflow_id)
        for record in found.pending:
            if record.gate == gate:
                return record
        listed = ", ".join(
            r.gate + ("" if r.workflow_id == workflow_id else f" (in {r.workflow_id})")
            for r in found.pending
        )
        silent = f"; did not answer: {', '.join(found.silent)}" if found.silent else ""
        raise ChorusInputError(
            f"run {workflow_id} has no pending gate {gate!r}; pending gates: "
            f"{listed or 'none'}{silent}"
        )

    async def _walk(self, workflow_id: str) -> _Found:
        """Pending gates of ``workflow_id`` and its running child workflows, depth first."""
        with input_refusals():
            validation.check_identifier("workflow_id", workflow_id)
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LookupError(f"no run with workflow id {workflow_id!r}") from exc
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            state = desc.status.name if desc.status else "UNKNOWN"
            raise ChorusInputError(
                f"run {workflow_id} is {state}, not running: no gate of it waits for a decision"
            )
        pending: list[GateRecord] = []
        silent: list[str] = []
        seen: set[str] = set()

        async def visit(wf_id: str, depth: int) -> None:
            if wf_id in seen or depth > MAX_CHILD_DEPTH:
                return
            seen.add(wf_id)
            try:
                progress: RunProgress = await self.client.get_workflow_handle(wf_id).query(
                    PROGRESS_QUERY, result_type=RunProgress, rpc_timeout=QUERY_TIMEOUT
                )
            except (RPCError, WorkflowQueryFailedError, ValueError) as exc:
                if depth == 0:
                    raise ChorusInputError(
                        f"run {wf_id} did not answer the {PROGRESS_QUERY!r} query "
                        f"({type(exc).__name__}: {exc}); is a worker running?"
                    ) from exc
                log.warning("skipped child workflow %s: %s", wf_id, exc)
                silent.append(wf_id)
                return
            pending.extend(r for r in progress.gates if r.pending)
            for step in progress.steps:
                if step.status == "running" and step.child_workflow_id:
                    await visit(step.child_workflow_id, depth + 1)

        await visit(workflow_id, 0)
        return _Found(pending, silent)

    async def decide(
        self,
        workflow_id: str,
        gate: str,
        decision: Literal["approve", "reject", "edit"],
        user: str,
        comment: str = "",
        content: str | None = None,
    ) -> GateRecord:
        """Approve, reject or edit a pending gate of a run.

        Args:
            workflow_id: The run (the gate may wait in one of its child workflows).
            gate: The gate's name.
            decision: ``approve`` (the text flows on), ``reject`` (the run fails as rejected)
                or ``edit`` (``content`` replaces the text that flows on).
            user: Who decides; must be an approver of the gate (or the gate has none).
            comment: Why (<= 4,000 characters), recorded with the decision.
            content: The replacement text of an ``edit`` (<= 250,000 characters).

        Returns:
            The gate as decided (``outcome``, ``decided_by``, ``decided_at`` set).

        Raises:
            ChorusInputError: A field breaks its rule or limit; no pending gate of that name;
                ``user`` may not decide it; the prohibited-content check refused the text; or
                the workflow refused the decision (its message).
            LookupError: No workflow has that id, or the one that waits has just ended.
        """
        request = make_decision(gate, decision, user, comment, content)
        texts = {"comment": request.comment}
        if request.content is not None:
            texts["content"] = request.content
        self._check_content(texts)
        record = await self.find_gate(workflow_id, gate)
        if not record.may_decide(user):
            raise ChorusInputError(
                f"user: {user!r} may not decide gate {gate!r} of {workflow_id}; approvers: "
                f"{', '.join(record.approvers)}"
                + (f" (that is: {', '.join(record.allowed_users)})" if record.allowed_users else "")
            )
        handle = self.client.get_workflow_handle(record.workflow_id)
        try:
            decided: GateRecord = await handle.execute_update(
                DECIDE_UPDATE, request, result_type=GateRecord
            )
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            raise ChorusInputError(
                f"gate {gate!r} of {record.workflow_id}: decision refused: {message}"
            ) from exc
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LookupError(
                    f"workflow {record.workflow_id!r} no longer runs (it ended or was reset): "
                    f"{exc.message}"
                ) from exc
            raise
        return decided
