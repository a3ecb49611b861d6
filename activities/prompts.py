"""Prompt assembly for agent calls, shortened to fit the model's context window.

Token counts here are estimates (``CHARS_PER_TOKEN`` characters per token, deliberately low so
log lines and numbers, which tokenize densely, still fit); the provider's reported usage is what
Chorus records and prices.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from chorus.contracts.models import LLMRequest, PriorOutput
from chorus.contracts.tools import ToolTurn

CHARS_PER_TOKEN = 3.0
PROMPT_MARGIN_TOKENS = 96
"""Room left for chat-template tokens the estimate does not see."""


@dataclass(frozen=True)
class Prompt:
    """System and user messages for one call, the step's tool turns, and how much was cut.

    ``turns`` are the earlier model turns of this step that called tools, with the results
    (each provider adapter renders them in its own wire format).
    """

    system: str
    user: str
    truncated_chars: int
    turns: tuple[ToolTurn, ...] = field(default=())


def estimate_tokens(text: str) -> int:
    """Estimated token count of ``text`` (``len / CHARS_PER_TOKEN``, rounded up)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _shorten(text: str, keep: int) -> str:
    """Keep the first two thirds and last third of ``keep`` characters, marking the cut."""
    if len(text) <= keep:
        return text
    if keep <= 0:
        return f"[... {len(text)} characters omitted to fit the model's context window ...]"
    head = keep * 2 // 3
    tail = keep - head
    omitted = len(text) - keep
    return (
        text[:head]
        + f"\n[... {omitted} characters omitted to fit the model's context window ...]\n"
        + (text[-tail:] if tail else "")
    )


def system_prompt(req: LLMRequest) -> str:
    """Return the agent's instructions, plus the JSON contract when it has an output schema."""
    if req.output_schema is None:
        return req.instructions
    return (
        req.instructions.rstrip()
        + "\n\nAnswer only with a JSON object that matches this JSON Schema:\n"
        + json.dumps(req.output_schema)
    )


def user_prompt(
    task: str, document: str, document_name: str | None, context: list[PriorOutput]
) -> str:
    """Build the user message: the task, the document, and the earlier agents' outputs."""
    parts = [f"Task: {task.strip()}"]
    if document:
        parts.append(f"Document ({document_name or 'input'}):\n<document>\n{document}\n</document>")
    if context:
        notes = "\n\n".join(f"### {c.name}\n{c.output.strip()}" for c in context)
        parts.append(f"Outputs of the earlier agents:\n{notes}")
    parts.append("Now do your part of the task.")
    return "\n\n".join(parts)


def build_prompt(req: LLMRequest, window_tokens: int) -> Prompt:
    """Assemble the messages for ``req`` so prompt plus completion fit ``window_tokens``.

    The document is shortened first (head and tail kept, the cut marked in the text); if that is
    not enough, the earlier outputs are shortened, oldest first. The task and instructions are
    never cut.

    Args:
        req: The activity input.
        window_tokens: The model's context window in tokens.

    Returns:
        The messages and the number of characters removed (0 when everything fit).

    """
    system = system_prompt(req)
    budget = window_tokens - req.max_tokens - PROMPT_MARGIN_TOKENS
    document, context = req.document, list(req.context)
    turns, turns_cut = fit_turns(req.turns, max(0, budget // 2))
    budget -= sum(estimate_tokens(transcript_of((t,))) for t in turns)
    budget -= sum(estimate_tokens(json.dumps(t.parameters)) for t in req.tools)

    def over() -> int:
        user = user_prompt(req.task, document, req.document_name, context)
        return estimate_tokens(system) + estimate_tokens(user) - budget

    excess = over()
    if excess <= 0:
        user = user_prompt(req.task, document, req.document_name, context)
        return Prompt(system, user, turns_cut, turns)
    cut = turns_cut
    excess_chars = math.ceil(excess * CHARS_PER_TOKEN) + 120  # + room for the cut marker
    if document:
        keep = max(0, len(document) - excess_chars)
        cut += len(document) - keep
        document = _shorten(document, keep)
        excess_chars = math.ceil(max(0, over()) * CHARS_PER_TOKEN)
        if excess_chars:
            excess_chars += 120
    for i, item in enumerate(context):
        if excess_chars <= 0:
            break
        keep = max(0, len(item.output) - excess_chars)
        cut += len(item.output) - keep
        context[i] = PriorOutput(name=item.name, output=_shorten(item.output, keep))
        excess_chars = math.ceil(max(0, over()) * CHARS_PER_TOKEN)
        if excess_chars:
            excess_chars += 120
    return Prompt(system, user_prompt(req.task, document, req.document_name, context), cut, turns)


def fit_turns(turns: list[ToolTurn], budget_tokens: int) -> tuple[tuple[ToolTurn, ...], int]:
    """Shorten tool results so the step's tool turns fit ``budget_tokens``.

    The newest results are what the model needs next, so the oldest are cut first (head and
    tail kept, the cut marked); calls and the model's own text are kept.

    Returns:
        The turns as they will be sent, and the characters removed.
    """
    kept = [t.model_copy(deep=True) for t in turns]
    over = sum(estimate_tokens(transcript_of((t,))) for t in kept) - budget_tokens
    cut = 0
    for turn in kept:
        for result in turn.results:
            if over <= 0:
                return tuple(kept), cut
            excess = math.ceil(over * CHARS_PER_TOKEN) + 120
            keep = max(0, len(result.output) - excess)
            removed = len(result.output) - keep
            if removed <= 0:
                continue
            result.output = _shorten(result.output, keep)
            cut += removed
            over -= math.floor(removed / CHARS_PER_TOKEN)
    return tuple(kept), cut


def transcript_of(turns: tuple[ToolTurn, ...] | list[ToolTurn]) -> str:
    """The tool turns as plain text: what the stored record and the local model read."""
    parts: list[str] = []
    for turn in turns:
        if turn.text:
            parts.append(f"Assistant: {turn.text}")
        for call, result in zip(turn.calls, turn.results, strict=False):
            args = json.dumps(call.arguments, ensure_ascii=False)
            status = "error" if result.is_error else "result"
            parts.append(f"Tool call {call.name}({args}) -> {status}:\n{result.output}")
    return "\n\n".join(parts)
