"""Amazon Bedrock through its Converse API (``bedrock-runtime``, boto3), for registry providers.

Kind ``bedrock`` of :mod:`chorus.config.providers`. Why Converse: one request shape for every
model family Bedrock serves (Anthropic, Meta, Mistral, Amazon Nova...), with tool use and
token usage in the response (AWS "Converse API" reference, ``POST /model/{modelId}/converse``).
Credentials come from boto3's standard chain (environment, shared config and profile,
container or instance role); ``endpoint`` overrides the regional endpoint (a VPC endpoint, or
the loopback stub of the tests).

Choices, and why:

- **Not streamed.** ``ConverseStream`` uses AWS's binary event-stream framing; the call is made
  whole and the run's live stream shows the step's text when it ends (``on_text`` is ignored).
- **boto3 is synchronous**: each call runs in a worker thread (``asyncio.to_thread``) with
  botocore's own retries off (``total_max_attempts=1``: Temporal owns retries) and the
  agent's timeout as the read timeout. A cancelled activity stops waiting at once; the thread
  ends when the HTTP call does (at most the read timeout later).
- **Structured output** is asked for in the system prompt (Converse has no JSON-schema mode
  common to every model); the activity validates the answer against the schema as for every
  provider.
- **Errors** map by the AWS error code first, then the HTTP status, into the same types as
  the other adapters: ``ThrottlingException``/``ServiceQuotaExceededException``/HTTP 429 ->
  ``RateLimited``; ``ModelNotReadyException``, ``ServiceUnavailableException``,
  ``InternalServerException``, ``ModelTimeoutException``, 5xx, timeouts and connection errors
  -> ``ProviderUnavailable`` (both retryable, ``Retry-After`` honoured); ``AccessDenied``,
  unrecognised or expired credentials, missing credentials -> ``ProviderAuthError``;
  ``ResourceNotFoundException`` -> ``ModelNotFound``; other 4xx (``ValidationException``) ->
  ``InvalidRequest``. Error codes from the Bedrock Runtime API reference, "Converse: Errors".
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.prompts import Prompt
from chorus.config.providers import ProviderEntry
from chorus.config.settings import Settings
from chorus.contracts import errors
from chorus.contracts.models import LLMRequest
from chorus.contracts.tools import wire_name
from chorus.observability.logs import SecretScrubber, secret_values

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

    from activities.provider_adapters import Completion, TextSink

_RATE_CODES = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
)
_UNAVAILABLE_CODES = frozenset(
    {
        "ModelNotReadyException",
        "ServiceUnavailableException",
        "InternalServerException",
        "ModelTimeoutException",
        "ModelStreamErrorException",
    }
)
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationTokenException",
    }
)
_NOT_FOUND_CODES = frozenset({"ResourceNotFoundException"})


_CODE_KIND: dict[str, str] = {
    **dict.fromkeys(_RATE_CODES, errors.RATE_LIMITED),
    **dict.fromkeys(_UNAVAILABLE_CODES, errors.PROVIDER_UNAVAILABLE),
    **dict.fromkeys(_AUTH_CODES, errors.PROVIDER_AUTH),
    **dict.fromkeys(_NOT_FOUND_CODES, errors.MODEL_NOT_FOUND),
}
"""Error type of each known AWS error code; the code wins over the status (Bedrock sends
``ModelNotReadyException`` with HTTP 429, and it is an outage, not a rate)."""
_KIND_WORDS = {
    errors.RATE_LIMITED: "rate limited",
    errors.PROVIDER_UNAVAILABLE: "provider error",
    errors.PROVIDER_AUTH: "authentication refused",
    errors.MODEL_NOT_FOUND: "model not found",
    errors.INVALID_REQUEST: "request rejected",
}


def _status_kind(status: int) -> str:
    """The error type of an HTTP status without a known error code (as the other adapters)."""
    if status == 429:
        return errors.RATE_LIMITED
    if status in (408, 409) or status >= 500:
        return errors.PROVIDER_UNAVAILABLE
    if status in (401, 403):
        return errors.PROVIDER_AUTH
    if status == 404:
        return errors.MODEL_NOT_FOUND
    return errors.INVALID_REQUEST


class BedrockClients:
    """boto3 ``bedrock-runtime`` clients of one registry entry, one per read timeout.

    A boto3 client's timeouts are fixed when it is built, and agents set their own timeout;
    the few distinct timeouts in a catalog each get one client (boto3 clients are
    thread-safe once built).

    Args:
        entry: The registry entry (region, profile, endpoint override).
    """

    def __init__(self, entry: ProviderEntry) -> None:
        self._entry = entry
        self._clients: dict[int, BedrockRuntimeClient] = {}
        self._lock = threading.Lock()

    def client(self, timeout_s: float) -> BedrockRuntimeClient:
        """The client whose read timeout is ``timeout_s`` rounded up to whole seconds."""
        seconds = max(1, int(-(-timeout_s // 1)))
        with self._lock:
            client = self._clients.get(seconds)
            if client is None:
                import boto3  # optional extra 'bedrock': imported only when used
                from botocore.config import Config

                session = boto3.session.Session(
                    profile_name=self._entry.aws_profile, region_name=self._entry.aws_region()
                )
                client = session.client(
                    "bedrock-runtime",
                    endpoint_url=self._entry.endpoint,
                    config=Config(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        read_timeout=seconds,
                        connect_timeout=min(seconds, 10),
                    ),
                )
                self._clients[seconds] = client
            return client


class BedrockAdapter:
    """One completion through Bedrock's Converse API.

    Args:
        entry: The registry entry.
        clients: Its boto3 clients.
        settings: Retry-After cap.
    """

    def __init__(self, entry: ProviderEntry, clients: BedrockClients, settings: Settings) -> None:
        self._entry = entry
        self._clients = clients
        self._settings = settings

    async def complete(
        self, req: LLMRequest, prompt: Prompt, on_text: TextSink | None = None
    ) -> Completion:
        """Ask for one Converse answer (not streamed: ``on_text`` is not called).

        Raises:
            ApplicationError: Typed per the module docstring, scrubbed of secrets.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._clients.client(req.timeout_s)
        request = converse_request(req, prompt)
        try:
            response = await asyncio.to_thread(client.converse, **request)
        except ClientError as exc:
            raise bedrock_error(exc, req, self._settings.max_retry_after_s) from None
        except BotoCoreError as exc:
            raise bedrock_error(exc, req, self._settings.max_retry_after_s) from None
        return converse_completion(dict(response), req)


def converse_request(req: LLMRequest, prompt: Prompt) -> dict[str, Any]:
    """The keyword arguments of ``bedrock-runtime.converse`` for one request.

    Tool turns become ``toolUse`` blocks (assistant) and ``toolResult`` blocks (user); tools
    become ``toolConfig`` (``toolChoice`` ``any`` when the agent requires a tool call).
    """
    system = prompt.system
    if req.output_schema is not None and not req.tools:
        system += (
            "\n\nAnswer with one JSON object only, no prose and no code fence, valid against "
            f"this JSON Schema:\n{json.dumps(req.output_schema)}"
        )
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"text": prompt.user}]}]
    for turn in prompt.turns:
        content: list[dict[str, Any]] = [{"text": turn.text}] if turn.text else []
        content += [
            {"toolUse": {"toolUseId": c.id, "name": wire_name(c.name), "input": c.arguments}}
            for c in turn.calls
        ]
        messages.append({"role": "assistant", "content": content})
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": r.call_id,
                            "content": [{"text": r.output or "(empty)"}],
                            "status": "error" if r.is_error else "success",
                        }
                    }
                    for r in turn.results
                ],
            }
        )
    request: dict[str, Any] = {
        "modelId": req.model,
        "system": [{"text": system}],
        "messages": messages,
        "inferenceConfig": {"maxTokens": req.max_tokens, "temperature": req.temperature},
    }
    if req.tools:
        request["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": spec.wire_name,
                        "description": spec.description[:1024] or spec.wire_name,
                        "inputSchema": {"json": spec.parameters},
                    }
                }
                for spec in req.tools
            ],
            "toolChoice": {"any": {}} if req.tool_choice == "required" else {"auto": {}},
        }
    return request


def converse_completion(response: Mapping[str, Any], req: LLMRequest) -> Completion:
    """A Converse response as a :class:`~activities.provider_adapters.Completion`.

    ``usage.inputTokens`` leaves out prompt-cache reads and writes (as Anthropic's does): the
    input total adds them.
    """
    from activities.provider_adapters import Completion, tool_call

    message = (response.get("output") or {}).get("message") or {}
    blocks = message.get("content") or []
    text = "".join(str(b["text"]) for b in blocks if "text" in b)
    calls = tuple(
        tool_call(
            str(b["toolUse"].get("toolUseId", "")),
            str(b["toolUse"].get("name", "")),
            b["toolUse"].get("input"),
            req.tools,
        )
        for b in blocks
        if "toolUse" in b
    )
    usage = response.get("usage") or {}
    cache_read = int(usage.get("cacheReadInputTokens") or 0)
    cache_write = int(usage.get("cacheWriteInputTokens") or 0)
    return Completion(
        text=text.strip(),
        model=req.model,
        input_tokens=int(usage.get("inputTokens") or 0) + cache_read + cache_write,
        output_tokens=int(usage.get("outputTokens") or 0),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        finish_reason=response.get("stopReason"),
        tool_calls=calls,
    )


def bedrock_error(exc: Exception, req: LLMRequest, cap_s: float) -> ApplicationError:
    """Translate a botocore exception into a typed, scrubbed ``ApplicationError``.

    Args:
        exc: ``botocore.exceptions.ClientError`` (the service answered with an error) or a
            ``BotoCoreError`` (no credentials, connection failed, timed out).
        req: The request (provider and model, for the message).
        cap_s: Cap on ``Retry-After`` in seconds.

    Returns:
        An error to raise; see the module docstring for the mapping.
    """
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    from activities.provider_adapters import parse_retry_after

    where = f"{req.provider}:{req.model}"
    attempt = activity.info().attempt if activity.in_activity() else 1
    delay = None
    non_retryable = False
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        headers = {str(k).lower(): str(v) for k, v in (meta.get("HTTPHeaders") or {}).items()}
        delay = parse_retry_after(headers, cap_s)
        detail = str(error.get("Message", "")).strip()[:500]
        said = f"{code or 'error'} (HTTP {status})" + (f": {detail}" if detail else "")
        kind = _CODE_KIND.get(code) or _status_kind(status)
        message = f"{where}: {_KIND_WORDS[kind]}, {said}"
        if kind not in (errors.RATE_LIMITED, errors.PROVIDER_UNAVAILABLE):
            non_retryable, delay = True, None
    elif isinstance(exc, NoCredentialsError | PartialCredentialsError):
        kind = errors.PROVIDER_AUTH
        message = f"{where}: no AWS credentials ({type(exc).__name__}: {exc})"
        non_retryable = True
    else:  # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ...
        kind = errors.PROVIDER_UNAVAILABLE
        message = f"{where}: cannot complete the call ({type(exc).__name__}: {exc})"
    return ApplicationError(
        SecretScrubber(secret_values()).scrub(message),
        attempt,
        type=kind,
        non_retryable=non_retryable,
        next_retry_delay=delay,
    )
