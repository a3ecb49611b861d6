"""Structured output of ``chorus.call_llm``: checking an answer against the agent's schema.

An answer that is not the JSON object the agent's ``output_schema`` requires fails the attempt
as ``InvalidOutput`` (retryable). The validator's message rides to the next attempt in the
heartbeat details (:data:`OUTPUT_FEEDBACK_KEY`) and is appended to its prompt; after
``output_retries`` such retries the error becomes non-retryable, so the workflow tries the next
provider.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.prompts import Prompt
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest

OUTPUT_FEEDBACK_KEY = "invalid_output"
"""Heartbeat-details key under which an attempt leaves its schema error for the next one."""


def check_json(output: str, req: LLMRequest) -> str:
    """Return ``output`` normalised as JSON, or raise a retryable ``InvalidOutput`` error.

    The answer must parse as a JSON object that ``req.output_schema`` validates (draft
    2020-12, ``jsonschema``); the error names the first offending path and the rule.
    """
    attempt = activity.info().attempt if activity.in_activity() else 1
    text = output.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApplicationError(
            f"agent {req.agent}: {req.provider}:{req.model} did not answer with JSON as its "
            f"output_schema requires ({exc.msg} at character {exc.pos})",
            attempt,
            type=errors.INVALID_OUTPUT,
        ) from exc
    if not isinstance(value, dict):
        raise ApplicationError(
            f"agent {req.agent}: expected a JSON object, got {type(value).__name__}",
            attempt,
            type=errors.INVALID_OUTPUT,
        )
    assert req.output_schema is not None
    problem = best_match(Draft202012Validator(req.output_schema).iter_errors(value))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "(top)"
        raise ApplicationError(
            f"agent {req.agent}: the answer does not match its output_schema at {where}: "
            f"{problem.message[:300]}",
            attempt,
            type=errors.INVALID_OUTPUT,
        )
    return json.dumps(value, ensure_ascii=False, indent=2)


def strict_compatible(schema: Any) -> bool:
    """Whether OpenAI's strict structured outputs accept ``schema``.

    Strict mode needs every object schema to list all its properties in ``required`` and to
    set ``additionalProperties: false`` (OpenAI API docs, "Structured Outputs", supported
    schemas); other schemas are sent without ``strict`` and validated after the answer.
    """
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object":
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if not isinstance(properties, dict) or set(schema.get("required", [])) != set(properties):
            return False
        if not all(strict_compatible(p) for p in properties.values()):
            return False
    nested = [schema[k] for k in ("items", "anyOf", "allOf", "prefixItems") if k in schema]
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            nested.extend(schema[key].values())
    return all(strict_compatible(item) for item in nested)


def output_feedback(details: Sequence[Any]) -> tuple[str, int]:
    """The schema error an earlier attempt left, and how many answers failed so far."""
    for item in reversed(details):
        if isinstance(item, dict) and OUTPUT_FEEDBACK_KEY in item:
            return str(item[OUTPUT_FEEDBACK_KEY]), int(item.get("failures", 1))
    return "", 0


def with_feedback(prompt: Prompt, message: str) -> Prompt:
    """The prompt with the previous answer's schema error appended to the user message."""
    return Prompt(
        system=prompt.system,
        user=(
            f"{prompt.user}\n\nYour previous answer was rejected: {message}. Answer again with "
            "only a JSON object that matches the output schema."
        ),
        truncated_chars=prompt.truncated_chars,
    )


def invalid_output_error(
    exc: ApplicationError, failures_before: int, output_retries: int
) -> ApplicationError:
    """Leave an ``InvalidOutput`` error's message for the next attempt, and say what to raise.

    Heartbeats the validator's message (:data:`OUTPUT_FEEDBACK_KEY`) so the next attempt's
    prompt quotes it. After ``output_retries`` retries the error is non-retryable and the next
    provider gets its turn.

    Args:
        exc: The ``InvalidOutput`` error of this attempt.
        failures_before: Answers of this provider that failed the schema before this one.
        output_retries: The agent's ``output_retries``.

    Returns:
        The error to raise instead of ``exc``.
    """
    failures = failures_before + 1
    activity.heartbeat({OUTPUT_FEEDBACK_KEY: exc.message, "failures": failures})
    last = failures > output_retries
    return ApplicationError(
        exc.message + ("; giving up on this provider" if last else ""),
        *exc.details,
        type=errors.INVALID_OUTPUT,
        non_retryable=last,
    )
