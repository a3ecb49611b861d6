"""The response cache: identical requests within an agent's TTL reuse a recorded completion.

Optional per agent (its ``cache:`` field, :class:`~chorus.contracts.models.CachePolicy`; off
by default). :meth:`ResponseCache.lookup` runs before the circuit breaker, the rate limits, the
budget reservation and the concurrency slot, so a hit costs one PostgreSQL round trip and none
of those: no provider call, no tokens, cost 0. The call is still recorded (message and ledger
rows, marked ``cached``), and the step result says ``cached: true``.

Two requests are identical when the provider would see the same request: the same provider,
the same model id (a registry alias resolved, so re-pointing an alias is a miss), the same
messages as sent (after the context-window fit and the agent's ``pii`` policy; with
``placeholder`` the stored answer is in placeholder form and is restored with this call's
originals), temperature, max_tokens, output schema, tools (name, description, parameters),
tool choice, and the step's earlier tool turns. The key is the SHA-256 of their canonical JSON;
the prompt itself is not stored.

Not cached:

- calls at temperature > 0 unless the agent sets ``allow_nonzero_temperature`` (it asked for
  varied answers; the catalog warns when it loads such an agent);
- agents with ``record_pii`` other than ``off``: the entry would keep the completion as the
  provider wrote it, which that policy keeps out of PostgreSQL;
- answers that failed (only a completion that passed the output schema is stored).

PostgreSQL trouble never fails a call here: a lookup that cannot be made is a miss, a store
that cannot be made is logged.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
from temporalio import activity

from activities.prompts import Prompt
from chorus.config.providers import ProviderEntry
from chorus.contracts.models import LLMRequest, LLMResponse
from chorus.contracts.tools import ToolCall
from chorus.observability import metrics
from chorus.storage import response_cache_rows
from chorus.storage.db import DB_ERRORS

KEY_VERSION = 1
"""Part of every key: bumping it retires all stored entries at once (a change of key contents)."""


def cache_refusal(req: LLMRequest) -> str | None:
    """Why this request is not cached although its agent has a cache, or ``None`` if it is.

    Args:
        req: The request; ``req.cache`` is the agent's policy (``None``: no cache).

    Returns:
        ``None`` when the cache applies; else the reason, e.g. ``"temperature 0.3 > 0 and
        allow_nonzero_temperature is off"``.
    """
    policy = req.cache
    if policy is None:
        return "the agent has no cache"
    if req.temperature > 0 and not policy.allow_nonzero_temperature:
        return f"temperature {req.temperature:g} > 0 and allow_nonzero_temperature is off"
    if req.record_pii != "off":
        return f"record_pii is {req.record_pii!r} (the entry would store the raw completion)"
    return None


def request_key(req: LLMRequest, prompt: Prompt, model_id: str) -> bytes:
    """The cache key of a request as sent: SHA-256 of its canonical JSON (32 bytes).

    Args:
        req: The request (provider, sampling settings, schema, tools).
        prompt: The prompt as sent (context-window fit, schema feedback and PII applied).
        model_id: The provider's own id of ``req.model`` (a registry alias resolved).
    """
    canonical = {
        "v": KEY_VERSION,
        "provider": req.provider,
        "model": model_id,
        "system": prompt.system,
        "user": prompt.user,
        "turns": [turn.model_dump(mode="json") for turn in prompt.turns],
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
        "output_schema": req.output_schema,
        "tools": [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in req.tools
        ],
        "tool_choice": req.tool_choice,
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).digest()


class ResponseCache:
    """Looks completions up in, and stores them to, ``llm_response_cache``.

    Args:
        pool: Chorus's PostgreSQL pool.
        registry: The worker's registry providers by name, to resolve model aliases (built-in
            providers are absent: their model names are sent as written).
    """

    def __init__(self, pool: asyncpg.Pool, registry: Mapping[str, ProviderEntry]) -> None:
        self._pool = pool
        self._registry = registry

    def _key(self, req: LLMRequest, prompt: Prompt) -> bytes:
        entry = self._registry.get(req.provider)
        model_id = entry.model_id(req.model) if entry is not None else req.model
        return request_key(req, prompt, model_id)

    async def lookup(self, req: LLMRequest, prompt: Prompt, attempt: int) -> LLMResponse | None:
        """The stored completion of this exact request, as a cache hit, or ``None``.

        Counts ``chorus_llm_cache_total{result}`` for agents the cache applies to.

        Args:
            req: The request.
            prompt: The prompt as it would be sent.
            attempt: This activity attempt (the response's ``attempt``).

        Returns:
            ``None`` on a miss, when the cache does not apply (:func:`cache_refusal`) or when
            PostgreSQL does not answer; else the completion with ``cached=True``, 0 tokens,
            cost 0, and the lookup's time as its latency. Its output and tool calls are as the
            provider wrote them (PII placeholders not yet restored).
        """
        if cache_refusal(req) is not None:
            return None
        started = time.perf_counter()
        try:
            stored = await response_cache_rows.lookup(self._pool, self._key(req, prompt))
        except DB_ERRORS as exc:
            activity.logger.warning(
                "agent %s: response cache not read (%s); calling the provider", req.agent, exc
            )
            stored = None
        if stored is None:
            metrics.LLM_CACHE.labels(result="miss").inc()
            return None
        metrics.LLM_CACHE.labels(result="hit").inc()
        latency_ms = (time.perf_counter() - started) * 1000.0
        activity.logger.info(
            "agent %s answered from the response cache (%s:%s, %.1f ms, $0)",
            req.agent,
            req.provider,
            stored["model"],
            latency_ms,
        )
        return LLMResponse(
            provider=req.provider,
            model=stored["model"],
            output=stored["output"],
            cost_usd=0.0,
            cost_known=True,
            latency_ms=round(latency_ms, 3),
            attempt=attempt,
            finish_reason=stored.get("finish_reason"),
            truncated_chars=prompt.truncated_chars,
            tool_calls=[ToolCall.model_validate(c) for c in stored.get("tool_calls", [])],
            cached=True,
        )

    async def store(self, req: LLMRequest, prompt: Prompt, response: LLMResponse) -> None:
        """Store a completion the provider just returned, for the agent's TTL.

        Does nothing when the cache does not apply (:func:`cache_refusal`) or the response is
        itself a hit; a PostgreSQL error is logged, not raised (the call succeeded).

        Args:
            req: The request.
            prompt: The prompt as sent.
            response: The provider's completion, PII placeholders not restored.
        """
        if req.cache is None or response.cached or cache_refusal(req) is not None:
            return
        completion: dict[str, Any] = {
            "model": response.model,
            "output": response.output,
            "tool_calls": [c.model_dump(mode="json") for c in response.tool_calls],
            "finish_reason": response.finish_reason,
            "input_tokens": response.input_tokens,
            "output_tokens": response.output_tokens,
            "cost_usd": response.cost_usd,
            "latency_ms": response.latency_ms,
        }
        try:
            await response_cache_rows.store(
                self._pool,
                self._key(req, prompt),
                provider=response.provider,
                model=response.model,
                completion=completion,
                ttl_s=req.cache.ttl_s,
            )
        except DB_ERRORS as exc:
            activity.logger.warning("agent %s: completion not cached (%s)", req.agent, exc)
