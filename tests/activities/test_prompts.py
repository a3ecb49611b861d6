"""Prompt assembly: fitting the context window."""

from __future__ import annotations

from activities.prompts import build_prompt, estimate_tokens
from chorus.contracts.models import LLMRequest, PriorOutput


def _request(document: str, context: list[PriorOutput] | None = None) -> LLMRequest:
    return LLMRequest(
        agent="a",
        provider="local",
        model="m",
        instructions="Be brief.",
        task="Summarize",
        document=document,
        document_name="doc.txt",
        context=context or [],
        max_tokens=200,
    )


def test_prompt_fits_context_window_by_cutting_document():
    doc = "".join(f"line {i}: something happened\n" for i in range(2000))
    prompt = build_prompt(_request(doc), window_tokens=2048)
    assert prompt.truncated_chars > 0
    assert estimate_tokens(prompt.system) + estimate_tokens(prompt.user) <= 2048 - 200
    assert "line 0:" in prompt.user and "line 1999:" in prompt.user  # head and tail kept
    assert "characters omitted to fit the model's context window" in prompt.user
    assert prompt.user.startswith("Task: Summarize")


def test_prompt_cuts_earlier_outputs_after_document():
    context = [PriorOutput(name="analyst", output="x" * 20_000)]
    prompt = build_prompt(_request("short doc" * 1000, context), window_tokens=1024)
    assert estimate_tokens(prompt.system) + estimate_tokens(prompt.user) <= 1024 - 200
    assert "### analyst" in prompt.user
    small = build_prompt(_request("tiny"), window_tokens=8192)
    assert small.truncated_chars == 0 and "tiny" in small.user
