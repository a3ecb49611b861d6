"""Chorus's errors: the exception classes it raises and the error-type strings on the wire.

Two halves, side by side:

- **Error-type strings** (``RATE_LIMITED``...): activities raise
  ``temporalio.exceptions.ApplicationError`` with ``type`` set to one of these names and
  ``details=[attempt]`` (the activity attempt that raised it). The LLM retry policy marks the
  non-retryable ones; workflow code decides on provider fallback from the type. They are part
  of the wire contract: never rename one.
- **The** :class:`ChorusError` **hierarchy**: what Chorus code raises in-process (SDK, CLI,
  worker start-up, storage), so a caller can catch ``ChorusError`` or a family of it
  (:class:`ChorusInputError` for bad input, :class:`ChorusUnavailableError` for a service that
  does not answer, :class:`ChorusRefusedError` for a request a policy refused). Each class names
  the error-type string it corresponds to, where one exists (``error_type``).
"""

from typing import Final

RATE_LIMITED: Final = "RateLimited"
"""HTTP 429: retried, honouring ``Retry-After``; fallback once retries are exhausted."""
PROVIDER_UNAVAILABLE: Final = "ProviderUnavailable"
"""HTTP 408/409/5xx, timeouts, connection errors: retried; fallback once exhausted."""
PROVIDER_AUTH: Final = "ProviderAuthError"
"""HTTP 401/403: not retried; the next provider in the chain is tried."""
MODEL_NOT_FOUND: Final = "ModelNotFound"
"""HTTP 404: the provider does not serve the model; not retried; next provider tried."""
PROVIDER_NOT_CONFIGURED: Final = "ProviderNotConfigured"
"""The worker has no credentials/endpoint for the provider; not retried; next provider tried."""
INVALID_REQUEST: Final = "InvalidRequest"
"""Other HTTP 4xx (malformed request): not retried and no fallback - it would fail anywhere."""
INVALID_OUTPUT: Final = "InvalidOutput"
"""The completion is not the JSON the agent's ``output_schema`` requires: retried, then fallback."""
STORAGE_UNAVAILABLE: Final = "StorageUnavailable"
"""PostgreSQL failed while recording: retried (an LLM response already received is reused)."""
BUDGET_EXCEEDED: Final = "BudgetExceeded"
"""The call's worst-case cost would pass a budget (daily, run or agent): not retried; the next
provider in the chain is tried (it may be cheaper, or free like a local model)."""
UNPRICED_MODEL: Final = "UnpricedModel"
"""A paid model without a price (genai-prices, ``CHORUS_PRICES_FILE``): refused before the
call, since no budget could limit it; not retried, the next provider is tried."""
CIRCUIT_OPEN: Final = "CircuitOpen"
"""The provider's fleet-wide circuit breaker is open (it failed ``CHORUS_CIRCUIT_FAILURES``
times within the window): refused before the call, not retried; the next provider is tried at
once (``chorus/governance/circuit_breaker.py``). Shown in ``providers_tried``."""
INVALID_INPUT: Final = "InvalidInput"
"""A workflow's input breaks a validation rule (``chorus/contracts/validation.py``): the run
fails."""
UNKNOWN_AGENT: Final = "UnknownAgent"
UNKNOWN_TOOL: Final = "UnknownTool"
"""An agent names a tool no registry or MCP server of the worker has: the step fails."""
APPROVAL_REQUIRED: Final = "ApprovalRequired"
"""A tool marked ``requires_approval``: refused until approval gates exist (the step fails)."""
TOOL_ERROR: Final = "ToolError"
"""A tool failed; after its attempts the error goes back to the model as the call's result."""
TOOL_ARGUMENTS_INVALID: Final = "ToolArgumentsInvalid"
"""The model's arguments do not match the tool's schema: not retried, told to the model."""
TOOL_UNAVAILABLE: Final = "ToolUnavailable"
"""The tool's MCP server cannot be reached: retried within the tool's attempts."""
TOOL_CALL_LIMIT: Final = "ToolCallLimit"
"""A step passed its agent's ``max_tool_calls`` or the run its ``MAX_TOOL_CALLS_PER_RUN``."""
WORKFLOW_ID_REUSED: Final = "WorkflowIdReused"
"""A run was started with the workflow id of an earlier run (its record is keyed on the id)."""
INVALID_CATALOG: Final = "InvalidCatalog"
NO_USABLE_PROVIDER: Final = "NoUsableProvider"
STEP_FAILED: Final = "StepFailed"
TOO_FEW_BRANCHES: Final = "TooFewBranchesSucceeded"
GATE_REJECTED: Final = "GateRejected"
"""A person rejected the run at a gate (or its time-out said ``reject``)."""
GATE_TIMED_OUT: Final = "GateTimedOut"
"""Nobody decided at a gate before its ``timeout_s``, and ``on_timeout`` is ``fail``."""
ROUTE_LIMIT: Final = "RouteLimit"
"""A router chose one more route than its ``max_routes``."""
HANDOFF_LIMIT: Final = "HandoffLimit"
"""A hand-off went past ``max_hops`` (agents handing the conversation round in a cycle)."""
CONTROL_ANSWER_INVALID: Final = "ControlAnswerInvalid"
"""A router, manager or hand-off agent answered something that is not one of its choices."""
CALLBACK_UNAVAILABLE: Final = "CallbackUnavailable"
"""Callback receiver answered 408/429/5xx, timed out or was unreachable: retried."""
CALLBACK_REJECTED: Final = "CallbackRejected"
"""Callback receiver answered another non-2xx status (e.g. 400, 404, 410): not retried."""
CALLBACK_NOT_CONFIGURED: Final = "CallbackNotConfigured"
"""A callback URL was given but the worker has no ``CHORUS_CALLBACK_SECRET``: not retried."""

LLM_NON_RETRYABLE: Final = (
    PROVIDER_AUTH,
    MODEL_NOT_FOUND,
    PROVIDER_NOT_CONFIGURED,
    INVALID_REQUEST,
    BUDGET_EXCEEDED,
)
"""Error types the LLM retry policy never retries (raised non-retryable too: UnpricedModel)."""
NO_FALLBACK: Final = frozenset({INVALID_REQUEST})
"""Error types that end an agent's provider chain instead of falling back."""


class ChorusError(Exception):
    """Base of every exception Chorus raises on purpose.

    Attributes:
        error_type: The wire error-type string this error maps to (an ``ApplicationError``
            type above), or the class name when it never crosses the wire.
    """

    error_type: str = "ChorusError"


class ChorusInputError(ChorusError, ValueError):
    """Bad input: the message names the field and the limit or rule broken (CLI exit code 2)."""

    error_type: str = INVALID_INPUT


class ChorusUnavailableError(ChorusError, RuntimeError):
    """A service Chorus needs (Temporal, PostgreSQL, the local model server) does not answer."""

    error_type: str = "Unavailable"


class ChorusRefusedError(ChorusError, RuntimeError):
    """A well-formed request refused by a policy or by the current state.

    For example a budget, an edit conflict, a permission, or a failed run's result.
    """

    error_type: str = "Refused"
