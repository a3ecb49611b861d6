"""The approval-gate activities: ``chorus.open_gate`` and ``chorus.close_gate`` (issue 15).

Workflows call both as *local* activities: each is one short PostgreSQL statement, run by the
worker that holds the workflow task, with no task-queue round trip (the gate itself, the wait
for a person's ``decide`` update or the time-out, is workflow code). ``chorus.open_gate`` pins
who may decide: its result, the approvers with ``role:<role>`` entries expanded from
``CHORUS_APPROVER_ROLES``, is recorded in the history, so a later change of the roles does not
change an open gate. Both writes are idempotent (keyed on the gate's ``<run id>:<n>``), so a
retried or re-executed local activity leaves the same row.

A PostgreSQL outage is a retryable ``StorageUnavailable``: the workflow's local retry policy
tries again, and the gate waits for its record rather than open (or end) without one.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.storage_outage import storage_error
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.control import CloseGateInput, OpenGateInput
from chorus.contracts.names import CLOSE_GATE_ACTIVITY, OPEN_GATE_ACTIVITY
from chorus.storage.db import DB_ERRORS
from chorus.storage.gate_records import record_gate_closed, record_gate_opened

ROLE_PREFIX = "role:"
"""How an approver entry names a role (``role:editor``), as ``APPROVER_PATTERN`` spells it."""


def expand_approvers(
    approvers: list[str], roles: dict[str, list[str]]
) -> tuple[list[str], list[str]]:
    """The users ``approvers`` name, with each ``role:<role>`` replaced by its members.

    Args:
        approvers: Entries as a gate's plan gives them: user names and ``role:<role>``.
        roles: Role name -> member user names (``Settings.approver_roles``).

    Returns:
        ``(users, unknown roles)``: the users sorted and each once; the roles ``roles`` does
        not define, in the order named (they contribute nobody).
    """
    users: set[str] = set()
    unknown: list[str] = []
    for entry in approvers:
        if not entry.startswith(ROLE_PREFIX):
            users.add(entry)
            continue
        role = entry.removeprefix(ROLE_PREFIX)
        if role in roles:
            users.update(roles[role])
        elif role not in unknown:
            unknown.append(role)
    return sorted(users), unknown


class ApprovalActivities:
    """Records approval gates in PostgreSQL (``gates``) and expands approver roles.

    Args:
        settings: Worker settings (``approver_roles``, from ``CHORUS_APPROVER_ROLES``).
        pool: PostgreSQL pool.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self._settings = settings
        self._pool = pool

    @activity.defn(name=OPEN_GATE_ACTIVITY)
    async def open_gate(self, input: OpenGateInput) -> list[str]:
        """Record a gate that starts waiting; return who may decide it.

        Args:
            input: The gate as the workflow holds it (``allowed_users`` still empty), its
                top-level run and the whole text under review.

        Returns:
            ``input.record.approvers`` with roles expanded: user names, sorted, each once.
            Empty when the plan names no approver (anyone may decide) and also when it names
            only roles without members (nobody may: :meth:`GateRecord.may_decide`). A role
            ``CHORUS_APPROVER_ROLES`` does not define contributes nobody and is logged as a
            warning.

        Raises:
            ApplicationError: ``StorageUnavailable`` (retryable) when PostgreSQL fails.
        """
        record = input.record
        users, unknown = expand_approvers(record.approvers, self._settings.approver_roles)
        if unknown:
            activity.logger.warning(
                "gate %s (%s): role(s) %s not in CHORUS_APPROVER_ROLES (defined: %s); "
                "they add no approver",
                record.gate,
                record.workflow_id,
                ", ".join(unknown),
                ", ".join(sorted(self._settings.approver_roles)) or "none",
            )
        try:
            await record_gate_opened(self._pool, input, users)
        except DB_ERRORS as exc:
            raise storage_error(f"cannot record gate {record.gate} ({record.key}): {exc}") from exc
        return users

    @activity.defn(name=CLOSE_GATE_ACTIVITY)
    async def close_gate(self, input: CloseGateInput) -> None:
        """Record a gate's outcome: the decision, its author and comment, or the time-out.

        Idempotent: a retry writes the same values again.

        Args:
            input: The gate with its outcome set and, for an ``edit``, the replacement text.

        Raises:
            ApplicationError: ``InvalidInput`` (non-retryable) when the record has no outcome;
                ``StorageUnavailable`` (retryable) when PostgreSQL fails.
        """
        record = input.record
        if record.outcome is None:
            raise ApplicationError(
                f"gate {record.gate} ({record.key}): chorus.close_gate needs the outcome set",
                type=errors.INVALID_INPUT,
                non_retryable=True,
            )
        try:
            await record_gate_closed(self._pool, input)
        except DB_ERRORS as exc:
            raise storage_error(
                f"cannot record the outcome of gate {record.gate} ({record.key}): {exc}"
            ) from exc
