"""Provider adapters of ``chorus.call_llm``: one per SDK, each with one error translation.

- :class:`OpenAICompatibleAdapter`: OpenAI, and the ``local`` OpenAI-compatible server
  (llama.cpp, vLLM, Ollama), through the ``openai`` SDK.
- :class:`AnthropicAdapter`: Anthropic's Messages API, through the ``anthropic`` SDK.
- Registry providers (``CHORUS_PROVIDERS_FILE``, :mod:`chorus.config.providers`): kinds
  ``openai``, ``openai-compatible`` and ``gemini`` (its OpenAI-compatible endpoint) through
  :class:`OpenAICompatibleAdapter` with their own base URL and key; ``azure-openai`` through
  ``openai.AsyncAzureOpenAI`` (the same adapter: Azure speaks Chat Completions under
  ``/openai/deployments/<deployment>/...?api-version=...``); ``anthropic`` through
  :class:`AnthropicAdapter`; ``bedrock`` through the Converse API
  (:mod:`activities.bedrock_adapter`). Model aliases are resolved before the call.

Temporal owns retries: the SDK clients are built with ``max_retries=0`` and every failure is
mapped to an ``ApplicationError`` whose type (see :mod:`chorus.contracts.errors`) tells the
retry policy and the workflow's provider fallback what to do:

- HTTP 429 -> ``RateLimited``; 408, 409, 5xx, timeouts and connection errors ->
  ``ProviderUnavailable``: retryable, with ``Retry-After``/``retry-after-ms`` as the next retry
  delay (capped by ``CHORUS_MAX_RETRY_AFTER_S``).
- 401/403 -> ``ProviderAuthError``, 404 -> ``ModelNotFound``: non-retryable, next provider.
- Other 4xx -> ``InvalidRequest``: non-retryable and no fallback.
- A response header ``x-should-retry: true|false`` overrides whether the error is retried (the
  type stays), as the OpenAI and Anthropic SDKs' own retry loops do.

The mapping follows temporalio's own ``contrib/openai_agents`` model activity
(``_invoke_model_activity.py``: a small activity body and a named error-translation function).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import anthropic
import httpx2
import openai
from anthropic import AsyncAnthropic
from openai import AsyncAzureOpenAI, AsyncOpenAI, AsyncStream
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.llm_output import strict_compatible
from activities.prompts import Prompt
from chorus.config.providers import AZURE_ENTRA_SCOPE, ProviderEntry, load_registry
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import PROVIDERS, LLMRequest
from chorus.contracts.tools import MAX_TOOL_ARGUMENTS_CHARS, ToolCall, ToolSpec, wire_name
from chorus.integrations import local_model
from chorus.observability.logs import SecretScrubber, secret_values


@dataclass(frozen=True)
class Completion:
    """One provider answer, as the adapters report it.

    Attributes:
        text: The completion, stripped.
        model: The model the provider says answered (may be a dated snapshot name).
        input_tokens: Prompt tokens, cached and cache-written ones included.
        output_tokens: Completion tokens (reasoning tokens included).
        cached_input_tokens: Prompt tokens read from the provider's cache.
        cache_write_tokens: Prompt tokens written to the provider's cache (Anthropic).
        finish_reason: Why generation stopped, as the provider names it.
        tool_calls: Tools the model asked for, names translated back from wire names.
    """

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    finish_reason: str | None
    tool_calls: tuple[ToolCall, ...] = field(default=())


TextSink = Callable[[str], None]
"""Takes each piece of completion text as the provider streams it; must not block."""


class ProviderAdapter(Protocol):
    """One provider's SDK behind one call; its failures come out translated.

    Each adapter has one error-mapping function (``translate_error``) that turns its SDK's
    exceptions into the :mod:`chorus.contracts.errors` types, scrubbed of secrets.
    """

    async def complete(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None = None
    ) -> Completion:
        """Ask the provider for one completion of ``prompt``.

        Args:
            req: The request.
            prompt: The prompt as it will be sent.
            on_text: When given, the call streams and each text delta is passed to it as it
                arrives; the returned completion is the same as without it.

        Raises:
            ApplicationError: Typed per :mod:`chorus.contracts.errors`.
        """
        ...


@dataclass
class ProviderClients:
    """SDK clients, built once per worker; ``None`` where the provider is not configured.

    Attributes:
        openai: The built-in ``openai`` provider's client.
        anthropic: The built-in ``anthropic`` provider's client.
        local: The built-in ``local`` provider's client.
        registry: The registry's other providers (``CHORUS_PROVIDERS_FILE``), by name; their
            clients are built on first use (:meth:`client_for`) and kept.
    """

    openai: AsyncOpenAI | None
    anthropic: AsyncAnthropic | None
    local: AsyncOpenAI | None
    registry: dict[str, ProviderEntry] = field(default_factory=dict)
    _built: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], Any]] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderClients:
        """Build the clients the environment allows.

        The OpenAI and Anthropic SDKs read ``OPENAI_API_KEY``/``OPENAI_BASE_URL`` and
        ``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL`` themselves; the local provider uses
        ``CHORUS_LOCAL_BASE_URL``. SDK retries are off (``max_retries=0``). The registry's
        other entries are kept for :meth:`client_for`.

        Raises:
            chorus.config.providers.ProviderRegistryError: ``CHORUS_PROVIDERS_FILE`` is invalid.
        """
        return cls(
            openai=AsyncOpenAI(max_retries=0)
            if settings.provider_configured("openai")[0]
            else None,
            anthropic=AsyncAnthropic(max_retries=0)
            if settings.provider_configured("anthropic")[0]
            else None,
            local=AsyncOpenAI(
                base_url=settings.local_base_url, api_key=settings.local_api_key, max_retries=0
            )
            if settings.local_base_url
            else None,
            registry={n: e for n, e in load_registry(settings).items() if not e.builtin},
        )

    def client_for(self, entry: ProviderEntry) -> Any:
        """The SDK client of a registry entry, built on first use (retries off).

        - ``openai``, ``openai-compatible``, ``gemini``: ``AsyncOpenAI(base_url=endpoint,
          api_key=$api_key_env)`` (a placeholder key when the entry names none: local
          servers ignore it, the SDK insists on one).
        - ``azure-openai``: ``AsyncAzureOpenAI(azure_endpoint, api_version)`` with the
          ``api-key`` header from ``$api_key_env``, or with Entra ID: an async bearer-token
          provider over ``azure.identity.aio.DefaultAzureCredential`` for scope
          :data:`~chorus.config.providers.AZURE_ENTRA_SCOPE`, which caches the token and
          fetches a new one before it expires (``azure-identity``, extra ``azure``).
        - ``anthropic``: ``AsyncAnthropic(base_url=endpoint, api_key=$api_key_env)``.
        - ``bedrock``: :class:`activities.bedrock_adapter.BedrockClients` (boto3, extra
          ``bedrock``).
        """
        client = self._built.get(entry.name)
        if client is not None:
            return client
        key = os.environ.get(entry.api_key_env, "") if entry.api_key_env else ""
        if entry.kind in ("openai", "openai-compatible", "gemini"):
            client = AsyncOpenAI(
                base_url=entry.endpoint, api_key=key or "not-needed", max_retries=0
            )
            self._closers.append(client.close)
        elif entry.kind == "azure-openai":
            if entry.auth == "entra-id":
                from azure.identity.aio import (  # optional extra: imported only when used
                    DefaultAzureCredential,
                    get_bearer_token_provider,
                )

                credential = DefaultAzureCredential()
                client = AsyncAzureOpenAI(
                    azure_endpoint=entry.endpoint or "",
                    api_version=entry.api_version,
                    azure_ad_token_provider=get_bearer_token_provider(
                        credential, AZURE_ENTRA_SCOPE
                    ),
                    max_retries=0,
                )
                self._closers.append(credential.close)
            else:
                client = AsyncAzureOpenAI(
                    azure_endpoint=entry.endpoint or "",
                    api_version=entry.api_version,
                    api_key=key,
                    max_retries=0,
                )
            self._closers.append(client.close)
        elif entry.kind == "anthropic":
            client = AsyncAnthropic(base_url=entry.endpoint, api_key=key, max_retries=0)
            self._closers.append(client.close)
        else:
            from activities.bedrock_adapter import BedrockClients

            client = BedrockClients(entry)
        self._built[entry.name] = client
        return client

    async def close(self) -> None:
        """Close the HTTP connection pools (and the Entra ID credential, if any)."""
        for client in (self.openai, self.anthropic, self.local):
            if client is not None:
                await client.close()
        for closer in self._closers:
            await closer()
        self._closers.clear()
        self._built.clear()


def parse_retry_after(headers: Mapping[str, str], cap_s: float) -> timedelta | None:
    """Read a server's retry hint: ``retry-after-ms``, or ``Retry-After`` (seconds or HTTP date).

    Args:
        headers: Response headers (case-insensitive mapping).
        cap_s: Largest delay honoured, in seconds.

    Returns:
        The delay, capped at ``cap_s``; ``None`` when absent or unparseable.

    """
    seconds: float | None = None
    if (ms := headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            seconds = float(ms) / 1000.0
    if seconds is None and (value := headers.get("retry-after")) is not None:
        try:
            seconds = float(value)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                when = email.utils.parsedate_to_datetime(value)
                seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds is None or seconds < 0:
        return None
    return timedelta(seconds=min(seconds, cap_s))


def provider_adapter(
    provider: str, clients: ProviderClients, settings: Settings
) -> ProviderAdapter:
    """The adapter that calls ``provider`` with this worker's client.

    Raises:
        ApplicationError: ``ProviderNotConfigured`` (non-retryable; the workflow tries the
            next provider) when the worker built no client for ``provider``, or ``provider``
            is not in this worker's registry, or its key variable is unset.
    """
    entry = clients.registry.get(provider) if provider not in PROVIDERS else None
    if entry is not None:
        return _registry_adapter(entry, clients, settings)
    client = getattr(clients, provider, None) if provider in PROVIDERS else None
    if client is None:
        _ok, reason = settings.provider_configured(provider)
        raise ApplicationError(
            f"provider {provider} is not configured on this worker: "
            f"{reason or 'no client was built'}",
            _attempt(),
            type=errors.PROVIDER_NOT_CONFIGURED,
            non_retryable=True,
        )
    if provider == "anthropic":
        return AnthropicAdapter(client, settings)
    return OpenAICompatibleAdapter(provider, client, settings)


def _registry_adapter(
    entry: ProviderEntry, clients: ProviderClients, settings: Settings
) -> ProviderAdapter:
    """The adapter of a registry provider, model aliases resolved.

    Raises:
        ApplicationError: ``ProviderNotConfigured`` when its key variable is unset or its SDK
            is not installed.
    """
    ok, reason = entry.configured()
    if not ok:
        raise ApplicationError(
            f"provider {entry.name} is not configured on this worker: {reason}",
            _attempt(),
            type=errors.PROVIDER_NOT_CONFIGURED,
            non_retryable=True,
        )
    client = clients.client_for(entry)
    inner: ProviderAdapter
    if entry.kind == "anthropic":
        inner = AnthropicAdapter(client, settings)
    elif entry.kind == "bedrock":
        from activities.bedrock_adapter import BedrockAdapter

        inner = BedrockAdapter(entry, client, settings)
    else:
        inner = OpenAICompatibleAdapter(
            entry.name,
            client,
            settings,
            max_tokens_param=entry.max_tokens_param,
            key_env=entry.api_key_env if entry.kind == "gemini" else None,
        )
    return AliasedAdapter(entry, inner)


class AliasedAdapter:
    """A registry provider's adapter that sends each model alias as the provider's own id.

    Args:
        entry: The registry entry (its ``models`` map alias -> id: an Azure deployment, a
            Bedrock model id).
        inner: The adapter of the entry's kind.
    """

    def __init__(self, entry: ProviderEntry, inner: ProviderAdapter) -> None:
        self._entry = entry
        self._inner = inner

    async def complete(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None = None
    ) -> Completion:
        """Call the inner adapter with the alias resolved (errors name the provider's id).

        Raises:
            ApplicationError: As the inner adapter.
        """
        model = self._entry.model_id(req.model)
        if model != req.model:
            req = req.model_copy(update={"model": model})
        return await self._inner.complete(req, prompt, on_text)


class OpenAICompatibleAdapter:
    """Chat completions through the ``openai`` SDK: OpenAI itself, or the ``local`` server.

    Args:
        provider: ``openai``, ``local``, or a registry provider of kind ``openai``,
            ``openai-compatible``, ``gemini`` or ``azure-openai``.
        client: The worker's client for that provider.
        settings: Retry-After cap; the local server's state (for its error messages).
        max_tokens_param: The request field of the completion limit (``max_tokens`` or
            ``max_completion_tokens``); ``None``: ``max_completion_tokens`` (OpenAI's). The
            built-in ``local`` provider keeps its llama.cpp dialect whatever this says.
        key_env: Gemini only: the key's variable, named when Gemini refuses the key (it
            answers HTTP 400 ``API_KEY_INVALID``, which is translated to
            ``ProviderAuthError`` so the chain falls back instead of failing the step).
    """

    def __init__(
        self,
        provider: str,
        client: AsyncOpenAI,
        settings: Settings,
        *,
        max_tokens_param: str | None = None,
        key_env: str | None = None,
    ) -> None:
        self._provider = provider
        self._client = client
        self._settings = settings
        self._max_tokens_param = max_tokens_param or "max_completion_tokens"
        self._gemini_key_env = key_env

    async def complete(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None = None
    ) -> Completion:
        """Ask for one chat completion; stream it to ``on_text`` when given.

        Streaming asks for the usage in the last chunk (``stream_options.include_usage``), so
        tokens and cost are the same as without it. A local tool turn is never streamed: its
        text is the JSON the grammar forces, not the answer.

        Raises:
            ApplicationError: The SDK's failure, translated by :meth:`translate_error`; a
                connection lost mid-stream or a stream past ``req.timeout_s`` is
                ``ProviderUnavailable``.
        """
        try:
            return await self._create(req, prompt, on_text)
        except openai.OpenAIError as exc:
            # The SDK error quotes the provider's text unscrubbed: never chain it.
            raise await self.translate_error(exc, req) from None
        except Exception as exc:
            if (error := stream_failure(exc, req)) is None:
                raise
            raise error from None

    async def translate_error(self, exc: openai.OpenAIError, req: LLMRequest) -> ApplicationError:
        """Translate an ``openai`` SDK exception into a typed, scrubbed ``ApplicationError``.

        For the ``local`` provider a connection error names why the embedded server is down
        when it is (issue 12: it crashed with SIGSEGV and the user saw four connect errors).
        """
        if (
            self._gemini_key_env is not None
            and isinstance(exc, openai.BadRequestError)
            and any(m in str(exc.body) for m in _GEMINI_KEY_REFUSALS)
        ):
            return ApplicationError(
                f"{req.provider}:{req.model}: authentication refused (HTTP 400 API_KEY_INVALID)"
                f"; check {self._gemini_key_env}",
                _attempt(),
                type=errors.PROVIDER_AUTH,
                non_retryable=True,
            )
        if self._provider == "local" and isinstance(exc, openai.APIConnectionError):
            down = await asyncio.to_thread(local_model.server_down_reason, self._settings)
            if down:
                return ApplicationError(
                    f"local:{req.model}: {down}", _attempt(), type=errors.PROVIDER_UNAVAILABLE
                )
        return map_provider_error(exc, req.provider, req.model, self._settings.max_retry_after_s)

    def _request(
        self, req: LLMRequest, prompt: Prompt
    ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], bool]:
        """``(messages, kwargs, extra_body, local_tools)`` of the chat completion request."""
        kwargs: dict[str, Any] = {}
        extra_body: dict[str, Any] = {}
        if self._provider == "local":
            # OpenAI-compatible servers (llama.cpp, vLLM, Ollama) take max_tokens; llama.cpp's
            # JSON mode needs the schema inside response_format to constrain generation.
            kwargs["max_tokens"] = req.max_tokens
            if req.output_schema is not None:
                extra_body["response_format"] = {"type": "json_object", "schema": req.output_schema}
        else:
            kwargs[self._max_tokens_param] = req.max_tokens
            if req.output_schema is not None:
                json_schema: dict[str, Any] = {
                    "name": f"{req.agent}_output",
                    "schema": req.output_schema,
                }
                if strict_compatible(req.output_schema):
                    json_schema["strict"] = True  # the API guarantees a conforming answer
                kwargs["response_format"] = {"type": "json_schema", "json_schema": json_schema}
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        local_tools = self._provider == "local" and bool(req.tools)
        if local_tools:
            messages, extra_body["response_format"] = local_tool_messages(
                req, prompt, self._settings.local_tool_rounds
            )
        elif req.tools:
            messages += openai_tool_messages(prompt)
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": spec.wire_name,
                        "description": spec.description[:1024],
                        "parameters": spec.parameters,
                    },
                }
                for spec in req.tools
            ]
            if req.tool_choice == "required":
                kwargs["tool_choice"] = "required"
        return messages, kwargs, extra_body, local_tools

    async def _create(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None
    ) -> Completion:
        client = self._client.with_options(timeout=req.timeout_s)
        messages, kwargs, extra_body, local_tools = self._request(req, prompt)
        if on_text is not None and not local_tools:
            answer = await self._streamed(client, req, messages, kwargs, extra_body, on_text)
        else:
            response = await client.chat.completions.create(
                model=req.model,
                messages=messages,  # type: ignore[arg-type]
                temperature=req.temperature,
                extra_body=extra_body or None,
                **kwargs,
            )
            choice = response.choices[0] if response.choices else None
            answer = _ChatAnswer(
                text=(choice.message.content or "") if choice else "",
                model=response.model or req.model,
                usage=response.usage,
                finish_reason=choice.finish_reason if choice else None,
                calls=[
                    (c.id, c.function.name, c.function.arguments)
                    for c in (choice.message.tool_calls or [] if choice else [])
                    if c.type == "function"
                ],
            )
        text = answer.text
        calls: tuple[ToolCall, ...] = ()
        if local_tools:
            text, calls = parse_local_tool_answer(text, req, turn=len(prompt.turns) + 1)
        elif answer.calls:
            calls = tuple(tool_call(i, name, args, req.tools) for i, name, args in answer.calls)
        usage = answer.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return Completion(
            text=text.strip(),
            model=answer.model,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,  # reasoning tokens included
            cached_input_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            cache_write_tokens=0,
            finish_reason=answer.finish_reason,
            tool_calls=calls,
        )

    async def _streamed(
        self,
        client: AsyncOpenAI,
        req: LLMRequest,
        messages: list[dict[str, Any]],
        kwargs: dict[str, Any],
        extra_body: dict[str, Any],
        on_text: TextSink,
    ) -> _ChatAnswer:
        """The chat completion streamed: deltas to ``on_text``, chunks assembled as one answer.

        Tool calls arrive in pieces keyed by their index (id and name first, then the
        arguments' JSON text in fragments); the usage comes in a last chunk without choices.
        """
        parts: list[str] = []
        calls: dict[int, list[str]] = {}
        answer = _ChatAnswer(text="", model=req.model, usage=None, finish_reason=None, calls=[])
        # httpx's timeout bounds each read; the whole stream gets the agent's timeout too.
        async with asyncio.timeout(req.timeout_s):
            stream: AsyncStream[ChatCompletionChunk]
            stream = await client.chat.completions.create(  # type: ignore[call-overload]
                model=req.model,
                messages=messages,
                temperature=req.temperature,
                extra_body=extra_body or None,
                stream=True,
                stream_options={"include_usage": True},
                **kwargs,
            )
            async with stream:
                async for chunk in stream:
                    answer.model = chunk.model or answer.model
                    if chunk.usage is not None:
                        answer.usage = chunk.usage
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        if choice.finish_reason:
                            answer.finish_reason = choice.finish_reason
                        delta = choice.delta
                        if delta is None:
                            continue
                        if delta.content:
                            parts.append(delta.content)
                            on_text(delta.content)
                        for piece in delta.tool_calls or []:
                            slot = calls.setdefault(piece.index, ["", "", ""])
                            slot[0] = piece.id or slot[0]
                            if piece.function is not None:
                                slot[1] += piece.function.name or ""
                                slot[2] += piece.function.arguments or ""
        answer.text = "".join(parts)
        answer.calls = [(c[0], c[1], c[2]) for _, c in sorted(calls.items())]
        if answer.usage is None and self._provider == "local":
            answer.usage = await self._counted_usage(client, req, messages, answer.text)
        return answer

    async def _counted_usage(
        self, client: AsyncOpenAI, req: LLMRequest, messages: list[dict[str, Any]], text: str
    ) -> CompletionUsage | None:
        """Count a streamed local completion's tokens with the server's own tokenizer.

        llama-cpp-python's server (the embedded one) sends no usage when streaming, whatever
        ``stream_options`` says; other OpenAI-compatible servers (llama.cpp's llama-server,
        vLLM, Ollama) do. Its ``/extras/tokenize/count`` counts the prompt as the server
        renders it (``--chat_format chatml``: :func:`chatml_prompt`) and, by difference, the
        completion. ``None`` (tokens recorded as 0, with a warning) when the server has no
        such endpoint.
        """
        root = str(client.base_url).rstrip("/").removesuffix("/v1")
        prompt = chatml_prompt(messages)
        try:
            counts = []
            for value in (prompt, prompt + text):
                response = await client.post(
                    f"{root}/extras/tokenize/count",
                    cast_to=httpx2.Response,
                    body={"input": value, "model": req.model},
                )
                counts.append(int(response.json()["count"]))
        except (openai.OpenAIError, ValueError, KeyError, TypeError) as exc:
            if activity.in_activity():
                activity.logger.warning(
                    "local:%s streamed without usage and cannot count tokens (%s): recorded 0",
                    req.model,
                    type(exc).__name__,
                )
            return None
        completion = max(counts[1] - counts[0], 0)
        return CompletionUsage(
            prompt_tokens=counts[0],
            completion_tokens=completion,
            total_tokens=counts[0] + completion,
        )


_GEMINI_KEY_REFUSALS = ("API_KEY_INVALID", "API key not valid")
"""How Gemini says a key is refused: HTTP 400 ``INVALID_ARGUMENT`` with reason
``API_KEY_INVALID`` (ai.google.dev, "Troubleshooting guide": 400 for an invalid key)."""


@dataclass
class _ChatAnswer:
    """A chat completion's parts, from a plain or a streamed response."""

    text: str
    model: str
    usage: Any
    finish_reason: str | None
    calls: list[tuple[str, str, str]]
    """``(id, wire name, arguments JSON)`` of each tool call."""


class AnthropicAdapter:
    """Messages through the ``anthropic`` SDK.

    Args:
        client: The worker's Anthropic client.
        settings: Retry-After cap.
    """

    def __init__(self, client: AsyncAnthropic, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def complete(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None = None
    ) -> Completion:
        """Ask for one message; stream it to ``on_text`` when given (``messages.stream``).

        The streamed message is assembled by the SDK (``get_final_message``): text, tool
        calls and usage are the same as without streaming.

        Raises:
            ApplicationError: The SDK's failure, translated by :meth:`translate_error`; a
                connection lost mid-stream or a stream past ``req.timeout_s`` is
                ``ProviderUnavailable``.
        """
        try:
            return await self._create(req, prompt, on_text)
        except anthropic.AnthropicError as exc:
            # The SDK error quotes the provider's text unscrubbed: never chain it.
            raise self.translate_error(exc, req) from None
        except Exception as exc:
            if (error := stream_failure(exc, req)) is None:
                raise
            raise error from None

    def translate_error(self, exc: anthropic.AnthropicError, req: LLMRequest) -> ApplicationError:
        """Translate an ``anthropic`` SDK exception into a typed, scrubbed ``ApplicationError``."""
        return map_provider_error(exc, req.provider, req.model, self._settings.max_retry_after_s)

    async def _create(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None
    ) -> Completion:
        client = self._client.with_options(timeout=req.timeout_s)
        kwargs: dict[str, Any] = {}
        if req.output_schema is not None:
            # Structured outputs: the API constrains the answer to the schema.
            kwargs["output_config"] = {
                "format": {"type": "json_schema", "schema": req.output_schema}
            }
        # The Messages API of the pinned SDK (anthropic 2.x) takes no sampling temperature;
        # the agent's temperature applies to OpenAI-compatible providers only.
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt.user}]
        if req.tools:
            messages += anthropic_tool_messages(prompt)
            kwargs["tools"] = [
                {
                    "name": spec.wire_name,
                    "description": spec.description[:1024],
                    "input_schema": spec.parameters,
                }
                for spec in req.tools
            ]
            if req.tool_choice == "required":
                kwargs["tool_choice"] = {"type": "any"}
        if on_text is None:
            response = await client.messages.create(
                model=req.model,
                max_tokens=req.max_tokens,
                system=prompt.system,
                messages=messages,  # type: ignore[arg-type]
                **kwargs,
            )
        else:
            # httpx's timeout bounds each read; the whole stream gets the agent's timeout too.
            async with (
                asyncio.timeout(req.timeout_s),
                client.messages.stream(
                    model=req.model,
                    max_tokens=req.max_tokens,
                    system=prompt.system,
                    messages=messages,  # type: ignore[arg-type]
                    **kwargs,
                ) as stream,
            ):
                async for event in stream:
                    if event.type == "text":
                        on_text(event.text)
                response = await stream.get_final_message()
        text = "".join(block.text for block in response.content if block.type == "text")
        calls = tuple(
            tool_call(block.id, block.name, block.input, req.tools)
            for block in response.content
            if block.type == "tool_use"
        )
        usage = response.usage
        # Anthropic's input_tokens leaves out the cache: the total input is all three.
        cache_read = int(getattr(usage, "cache_read_input_tokens", 0) or 0)
        cache_write = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        return Completion(
            text=text.strip(),
            model=response.model or req.model,
            input_tokens=usage.input_tokens + cache_read + cache_write,
            output_tokens=usage.output_tokens,
            cached_input_tokens=cache_read,
            cache_write_tokens=cache_write,
            finish_reason=response.stop_reason,
            tool_calls=calls,
        )


def tool_call(call_id: str, wire: str, arguments: Any, tools: list[ToolSpec]) -> ToolCall:
    """A provider's tool call, its wire name translated back to the catalog name.

    ``arguments`` is a JSON text (OpenAI) or an object (Anthropic). Arguments that are not a
    JSON object, or longer than ``MAX_TOOL_ARGUMENTS_CHARS``, and a name the agent was not
    offered are kept as ``arguments_error``: the workflow answers the call with that error.
    """
    by_wire = {spec.wire_name: spec.name for spec in tools}
    name = by_wire.get(wire)
    if name is None:
        return ToolCall(id=call_id, name=wire, arguments_error=f"no tool named {wire} was offered")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return ToolCall(
                id=call_id, name=name, arguments_error=f"arguments are not valid JSON: {exc}"
            )
    if not isinstance(arguments, dict):
        return ToolCall(id=call_id, name=name, arguments_error="arguments must be a JSON object")
    if len(json.dumps(arguments)) > MAX_TOOL_ARGUMENTS_CHARS:
        return ToolCall(
            id=call_id,
            name=name,
            arguments_error=f"arguments longer than {MAX_TOOL_ARGUMENTS_CHARS} characters",
        )
    return ToolCall(id=call_id, name=name, arguments=arguments)


def openai_tool_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The step's tool turns as Chat Completions messages (assistant ``tool_calls``, ``tool``)."""
    messages: list[dict[str, Any]] = []
    for turn in prompt.turns:
        wires = {c.id: wire_name(c.name) for c in turn.calls}
        messages.append(
            {
                "role": "assistant",
                "content": turn.text or None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": wires[c.id], "arguments": json.dumps(c.arguments)},
                    }
                    for c in turn.calls
                ],
            }
        )
        messages += [
            {"role": "tool", "tool_call_id": r.call_id, "content": r.output or "(empty)"}
            for r in turn.results
        ]
    return messages


def anthropic_tool_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """The step's tool turns as Messages API blocks (``tool_use``, then ``tool_result``)."""
    messages: list[dict[str, Any]] = []
    for turn in prompt.turns:
        content: list[dict[str, Any]] = [{"type": "text", "text": turn.text}] if turn.text else []
        content += [
            {"type": "tool_use", "id": c.id, "name": wire_name(c.name), "input": c.arguments}
            for c in turn.calls
        ]
        messages.append({"role": "assistant", "content": content})
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": r.call_id,
                        "content": r.output or "(empty)",
                        "is_error": r.is_error,
                    }
                    for r in turn.results
                ],
            }
        )
    return messages


LOCAL_TOOL_INSTRUCTIONS = """

You can call these tools:
{tools}

Reply with one JSON object only: {{"tool_calls": [{{"name": "<tool>", "arguments": {{...}}}}]}}
to call tools (they run and their results come back to you), or {{"answer": "<your answer>"}}
when you can answer the task."""


def chatml_prompt(messages: list[dict[str, Any]]) -> str:
    """The prompt text llama-cpp-python's ``chatml`` chat format makes of ``messages``.

    Mirrors ``format_chatml`` of llama-cpp-python 0.3.x (``llama_chat_format.py``): the first
    system message, then each user/assistant message as ``<|im_start|>`` and its role, a line
    break, the content and ``<|im_end|>`` (an empty one as the bare role line), then the
    assistant's opening.
    """
    system = next((m.get("content") or "" for m in messages if m["role"] == "system"), "")
    text = f"<|im_start|>system\n{system}<|im_end|>\n"
    for message in messages:
        if message["role"] not in ("user", "assistant"):
            continue
        content = message.get("content")
        if isinstance(content, str) and content:
            text += f"<|im_start|>{message['role']}\n{content}<|im_end|>\n"
        else:
            text += f"<|im_start|>{message['role']}\n"
    return text + "<|im_start|>assistant\n"


def local_tool_messages(
    req: LLMRequest, prompt: Prompt, tool_rounds: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and grammar for a tool turn of the ``local`` (llama.cpp) server.

    The tools are described in the system message and the answer is constrained by a JSON
    Schema grammar (llama.cpp's ``response_format`` with ``schema``) to either
    ``{"tool_calls": [...]}`` (each call's arguments constrained by the tool's schema) or the
    answer (``{"answer": ...}``, or the agent's output schema). llama-cpp-python's own
    ``chatml-function-calling`` format is not used: its template drops ``tool`` messages,
    HTML-escapes the prompt and lets generation run past ``max_tokens``
    (llama-cpp-python 0.3.x, ``llama_chat_format.py``). After ``CHORUS_LOCAL_TOOL_ROUNDS``
    tool turns only the answer is allowed: small local models otherwise call tools forever.

    Returns:
        The messages, and the ``response_format`` to send.
    """
    listing = "\n".join(
        f"- {spec.wire_name}: {spec.description[:300]} Arguments schema: "
        f"{json.dumps(spec.parameters)}"
        for spec in req.tools
    )
    system = prompt.system + LOCAL_TOOL_INSTRUCTIONS.format(tools=listing)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": prompt.user},
    ]
    for turn in prompt.turns:
        calls = [{"name": wire_name(c.name), "arguments": c.arguments} for c in turn.calls]
        messages.append({"role": "assistant", "content": json.dumps({"tool_calls": calls})})
        results = "\n\n".join(
            f"[{wire_name(c.name)}] {'error' if r.is_error else 'result'}:\n{r.output}"
            for c, r in zip(turn.calls, turn.results, strict=False)
        )
        messages.append(
            {"role": "user", "content": f"Tool results:\n{results}\n\nContinue the task."}
        )
    answer: dict[str, Any] = req.output_schema or {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    call_schemas = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.wire_name}, "arguments": spec.parameters},
            "required": ["name", "arguments"],
        }
        for spec in req.tools
    ]
    calling: dict[str, Any] = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "minItems": 1,
                "maxItems": 4,
                "items": {"anyOf": call_schemas},
            }
        },
        "required": ["tool_calls"],
    }
    schema: dict[str, Any]
    if req.tool_choice == "required":
        schema = calling
    elif len(prompt.turns) >= tool_rounds:
        schema = answer
    else:
        schema = {"anyOf": [calling, answer]}
    return messages, {"type": "json_object", "schema": schema}


def parse_local_tool_answer(
    text: str, req: LLMRequest, *, turn: int
) -> tuple[str, tuple[ToolCall, ...]]:
    """Split the local model's JSON into tool calls or the answer text.

    Returns:
        ``(answer, ())`` or ``("", calls)``; text that is not the expected JSON is returned as
        the answer unchanged (the output schema check, if any, judges it).
    """
    try:
        data = json.loads(text)
    except ValueError:
        return text, ()
    if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
        calls = tuple(
            tool_call(
                f"call_{turn}_{index}",
                str(item.get("name", "")) if isinstance(item, dict) else "",
                item.get("arguments", {}) if isinstance(item, dict) else None,
                req.tools,
            )
            for index, item in enumerate(data["tool_calls"], 1)
        )
        return "", calls
    if req.output_schema is None and isinstance(data, dict) and "answer" in data:
        return str(data["answer"]), ()
    return text, ()


_TRANSPORT_PACKAGES = frozenset({"httpx", "httpx2", "httpcore", "httpcore2", "h11"})
"""Packages whose exceptions escape the SDKs while a stream is read (the SDKs wrap only the
request, not the iteration over the response body)."""


def stream_failure(exc: Exception, req: LLMRequest) -> ApplicationError | None:
    """Translate a failure while a stream is read; ``None`` if ``exc`` is not one.

    A stream longer than ``req.timeout_s`` (``TimeoutError`` of the call's own deadline) and a
    transport error (connection reset or closed mid-body: the HTTP client's own exception, as
    the SDKs let it through) are ``ProviderUnavailable``: retryable, like the same failures
    before the first byte. The message names the error's type; it quotes no provider text.
    """
    where = f"{req.provider}:{req.model}"
    if isinstance(exc, TimeoutError):
        return ApplicationError(
            f"{where}: request timed out (streaming for more than {req.timeout_s:g} s)",
            _attempt(),
            type=errors.PROVIDER_UNAVAILABLE,
        )
    if any(c.__module__.split(".")[0] in _TRANSPORT_PACKAGES for c in type(exc).__mro__):
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ApplicationError(
            f"{where}: connection lost mid-stream ({detail})",
            _attempt(),
            type=errors.PROVIDER_UNAVAILABLE,
        )
    return None


def map_provider_error(exc: Exception, provider: str, model: str, cap_s: float) -> ApplicationError:
    """Translate an OpenAI/Anthropic SDK exception into a typed ``ApplicationError``.

    Both SDKs are generated from the same template (``APIStatusError``, ``APITimeoutError``,
    ``APIConnectionError``), so one mapping serves the adapters of both. The message is
    scrubbed of secrets (API keys, bearer tokens, the configured secret values:
    :class:`chorus.observability.logs.SecretScrubber`) before it leaves the activity: a
    provider may quote the request's key in its error text, and the message is stored in the
    history, in ``runs.error`` and printed by the CLI.

    Args:
        exc: The SDK exception.
        provider: Provider name, for the message.
        model: Model name, for the message.
        cap_s: Cap on ``Retry-After`` in seconds.

    Returns:
        An error to raise; see the module docstring for the mapping.

    """
    error = _typed_error(exc, f"{provider}:{model}", cap_s)
    non_retryable = error.non_retryable
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        # The provider's own verdict wins over the status code, as in the OpenAI and Anthropic
        # SDKs' retry loops (``x-should-retry: true|false``).
        should_retry = exc.response.headers.get("x-should-retry", "").strip().lower()
        if should_retry in ("true", "false"):
            non_retryable = should_retry == "false"
    return ApplicationError(
        SecretScrubber(secret_values()).scrub(error.message),
        *error.details,
        type=error.type,
        non_retryable=non_retryable,
        next_retry_delay=error.next_retry_delay,
    )


def _typed_error(exc: Exception, where: str, cap_s: float) -> ApplicationError:
    attempt = _attempt()
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        return _status_error(exc, where, cap_s, attempt)
    if isinstance(exc, openai.APITimeoutError | anthropic.APITimeoutError):
        return ApplicationError(
            f"{where}: request timed out", attempt, type=errors.PROVIDER_UNAVAILABLE
        )
    if isinstance(exc, openai.APIConnectionError | anthropic.APIConnectionError):
        # httpx2's ReadError on a reset connection has an empty message: name its type (by
        # name: each SDK may raise its own copy of the transport's classes).
        cause = exc.__cause__ or exc
        kind = type(cause).__name__
        detail = f"{kind}: {cause}" if str(cause) else kind
        connecting = kind in ("ConnectError", "ConnectTimeout")
        what = "cannot connect" if connecting else "connection lost"
        return ApplicationError(
            f"{where}: {what} ({detail})",
            attempt,
            type=errors.PROVIDER_UNAVAILABLE,
        )
    return ApplicationError(
        f"{where}: unexpected error {type(exc).__name__}: {exc}",
        attempt,
        type=errors.PROVIDER_UNAVAILABLE,
    )


def _status_error(
    exc: openai.APIStatusError | anthropic.APIStatusError, where: str, cap_s: float, attempt: int
) -> ApplicationError:
    status = exc.status_code
    delay = parse_retry_after(exc.response.headers, cap_s)
    detail = _error_detail(exc)
    if status == 200:
        # An error event inside a stream whose response began 200 (Anthropic's
        # ``event: error``, e.g. overloaded_error): the error's type says what happened.
        status = _STREAM_ERROR_STATUS.get(_error_type(exc), 500)
    if status == 429:
        return ApplicationError(
            f"{where}: rate limited (HTTP 429){detail}",
            attempt,
            type=errors.RATE_LIMITED,
            next_retry_delay=delay,
        )
    if status in (408, 409) or status >= 500:
        return ApplicationError(
            f"{where}: provider error HTTP {status}{detail}",
            attempt,
            type=errors.PROVIDER_UNAVAILABLE,
            next_retry_delay=delay,
        )
    if status in (401, 403):
        return ApplicationError(
            f"{where}: authentication refused (HTTP {status}); check the API key{detail}",
            attempt,
            type=errors.PROVIDER_AUTH,
            non_retryable=True,
        )
    if status == 404:
        return ApplicationError(
            f"{where}: model or endpoint not found (HTTP 404){detail}",
            attempt,
            type=errors.MODEL_NOT_FOUND,
            non_retryable=True,
        )
    return ApplicationError(
        f"{where}: request rejected (HTTP {status}){detail}",
        attempt,
        type=errors.INVALID_REQUEST,
        non_retryable=True,
    )


_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
"""HTTP status of each error type of an error event in a stream (Anthropic's documented error
types, docs.anthropic.com "Errors"); an unknown type counts as a server error (retried)."""


def _error_type(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    body = exc.body
    inner = body.get("error", body) if isinstance(body, dict) else None
    kind = inner.get("type") if isinstance(inner, dict) else None
    return str(kind or "")


def _error_detail(exc: openai.APIStatusError | anthropic.APIStatusError) -> str:
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
    if message is None:
        message = exc.message
    text = str(message).strip()
    return f": {text[:500]}" if text else ""


def _attempt() -> int:
    """The current activity attempt (1 outside an activity, e.g. in unit tests)."""
    return activity.info().attempt if activity.in_activity() else 1
