"""The ``tool_calls`` table: one row per tool call an agent made (``chorus.call_tool``)."""

from __future__ import annotations

from typing import Any

import asyncpg


async def record_tool_call(
    pool: asyncpg.Pool,
    *,
    workflow_id: str,
    root_workflow_id: str,
    activity_id: str,
    agent: str,
    tool: str,
    call_id: str,
    arguments: dict[str, Any],
    output: str,
    is_error: bool,
    error_type: str | None,
    latency_ms: float,
    attempt: int,
) -> None:
    """Write (or, for a retried activity, replace) one tool call's row.

    Keyed on (workflow id, activity id), like ``messages``: each call leaves one row, the
    attempt that answered it.

    Args:
        pool: PostgreSQL pool.
        workflow_id: The workflow that made the call.
        root_workflow_id: Its top-level run.
        activity_id: The ``chorus.call_tool`` activity's id.
        agent: The agent that asked.
        tool: Tool name.
        call_id: The provider's call id.
        arguments: The arguments object.
        output: The result text (the whole of it, also when the history holds a reference),
            or the error message.
        is_error: The call failed.
        error_type: The failure's type, if it failed.
        latency_ms: Time in the tool, milliseconds.
        attempt: The activity attempt that answered.
    """
    await pool.execute(
        "INSERT INTO tool_calls (workflow_id, root_workflow_id, activity_id, agent, tool,"
        " call_id, arguments, output, is_error, error_type, latency_ms, attempt)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        " ON CONFLICT (workflow_id, activity_id) DO UPDATE SET output = EXCLUDED.output,"
        " is_error = EXCLUDED.is_error, error_type = EXCLUDED.error_type,"
        " latency_ms = EXCLUDED.latency_ms, attempt = EXCLUDED.attempt",
        workflow_id,
        root_workflow_id,
        activity_id,
        agent,
        tool,
        call_id,
        arguments,
        output,
        is_error,
        error_type,
        latency_ms,
        attempt,
    )
