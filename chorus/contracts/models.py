"""Payload models: inputs and results of Chorus workflows, activities and queries.

These are durable contracts: stored histories must still decode after a change, so new fields
are optional with defaults and existing fields are never renamed.

Units: tokens are counts reported by the provider, ``cost_usd`` is US dollars, ``*_ms`` are
milliseconds.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from chorus.contracts.control import (
    CONTINUE_AS_NEW_EVERY,
    MAX_LOOP_ITERATIONS,
    MAX_ROUTES_TAKEN,
    ControlOutcome,
    GateRecord,
    GateStep,
    GroupChatStep,
    HandoffStep,
    RouteChoice,
    Until,
)
from chorus.contracts.limits import MAX_CALLBACK_URL_CHARS
from chorus.contracts.limits import MAX_INSTRUCTIONS_CHARS as MAX_INSTRUCTIONS_CHARS
from chorus.contracts.limits import MAX_PLAN_DEPTH as MAX_PLAN_DEPTH
from chorus.contracts.limits import MAX_PLAN_STEPS as MAX_PLAN_STEPS
from chorus.contracts.limits import MAX_PROVIDER_CHAIN as MAX_PROVIDER_CHAIN
from chorus.contracts.tools import (
    MAX_TOOL_CALLS_PER_STEP,
    MAX_TOOLS_PER_AGENT,
    ToolCall,
    ToolCallRecord,
    ToolRef,
    ToolSpec,
    ToolTurn,
)
from chorus.contracts.validation import control_problem
from chorus.contracts.wire import FILE_STRICTNESS as FILE_STRICTNESS
from chorus.contracts.wire import EntryInput as EntryInput
from chorus.contracts.wire import TextRef as TextRef
from chorus.contracts.wire import WireModel as WireModel

PROVIDER_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
"""A provider's name: the built-in ``openai``, ``anthropic``, ``local``, or an entry of the
provider registry (``chorus/config/providers.py``). No ``:`` (it separates provider and model)
and no ``_`` or ``.`` (it is part of task-queue names, ``<queue>-llm-<provider>``)."""
ProviderName = Annotated[str, Field(pattern=PROVIDER_NAME_PATTERN)]
"""Was ``Literal["openai", "anthropic", "local"]``: every stored payload still validates."""
PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "local")
"""The built-in providers (always in the registry)."""

AGENT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
API_KEY_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
"""Names of API keys (``chorus keys create --name``): no ``:``, since budget periods are
``key:<name>:<day>``."""


PiiKind = Literal["email", "phone", "ssn", "card", "ip"]
PiiPolicy = Literal["off", "redact", "mask", "placeholder"]
# What happens to PII in the stored record (PostgreSQL): no placeholders, since the mapping
# never leaves the worker and a stored token could never be restored.
RecordPiiPolicy = Literal["off", "redact", "mask"]


class ProviderModel(WireModel):
    """One link of an agent's provider chain, written ``provider:model`` in agent files.

    Attributes:
        provider: ``openai``, ``anthropic``, ``local`` (any OpenAI-compatible server), or a
            provider of the registry (``CHORUS_PROVIDERS_FILE``); one missing from a worker's
            registry is skipped there as not configured (the chain's next provider is tried).
        model: Model name sent to the provider, e.g. ``gpt-4o-mini``, or one of the registry
            entry's model aliases.

    """

    provider: ProviderName
    model: str = Field(min_length=1, max_length=200)

    @classmethod
    def parse(cls, text: str) -> ProviderModel:
        """Parse ``"provider:model"``.

        Raises:
            ValueError: When there is no ``:`` or the provider is not a valid name. Whether
                the registry holds it is checked where the registry is known (the worker
                resolving the agent for a run), not here: payloads carry no configuration.

        """
        provider, sep, model = text.partition(":")
        if not sep or not model:
            raise ValueError(
                f"provider entry {text!r} must read 'provider:model', e.g. 'local:smollm2'"
            )
        if not re.fullmatch(PROVIDER_NAME_PATTERN, provider):
            raise ValueError(
                f"provider {provider!r} in {text!r} is not a provider name: built in are "
                f"{', '.join(PROVIDERS)}; others come from CHORUS_PROVIDERS_FILE and match "
                f"{PROVIDER_NAME_PATTERN}"
            )
        return cls.model_validate({"provider": provider, "model": model})

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


MAX_CACHE_TTL_S = 30 * 86_400
"""Longest response-cache TTL an agent may set: 30 days, in seconds."""


class CachePolicy(WireModel):
    """An agent's response cache: identical requests within ``ttl_s`` reuse a recorded completion.

    See :mod:`activities.response_cache` for what makes two requests identical and what a hit
    records.

    Attributes:
        ttl_s: How long a stored completion is reused, in seconds (1 s to 30 days).
        allow_nonzero_temperature: Reuse completions of calls sampled at temperature > 0 too.
            Off by default: at temperature > 0 the agent asked for varied answers, so its
            calls are not cached unless it says so here.
    """

    ttl_s: int
    allow_nonzero_temperature: bool = False

    @field_validator("ttl_s")
    @classmethod
    def _ttl_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_CACHE_TTL_S:
            raise ValueError(
                f"ttl_s must be 1 to {MAX_CACHE_TTL_S:,} seconds (30 days), not {value}"
            )
        return value


class AgentSpec(WireModel):
    """An agent: a named system prompt with an ordered provider chain and sampling settings.

    Attributes:
        name: Lower-case identifier, 1-64 characters (``[a-z][a-z0-9_-]*``).
        description: One line shown by ``chorus agents``.
        instructions: System prompt, at most 20,000 characters.
        providers: Ordered chain, tried first to last (1-8 entries); a string
            ``"provider:model"`` is accepted for each entry.
        temperature: Sampling temperature, 0-2.
        max_tokens: Completion limit in tokens, 1-32,768.
        output_schema: Optional JSON Schema (an object schema, draft 2020-12); when set the
            agent must answer with JSON that the schema validates (``jsonschema``); providers
            are asked for structured output where they support it.
        output_retries: Times a non-conforming answer is retried with the validator's
            message fed back to the model before the next provider is tried (0-3, default 2).
        timeout_s: Per-attempt timeout in seconds (start-to-close of one LLM call), 1-1,800.
        pii: What happens to e-mail addresses, phone numbers, US SSNs, payment-card numbers and
            IP addresses before any text reaches the provider (``chorus/governance/pii.py``):
            ``redact``
            (``[EMAIL]``; the default), ``mask`` (``j***@example.com``), ``placeholder``
            (``<<EMAIL_1>>``, restored in the agent's output; the mapping never leaves the
            worker) or ``off``.
        record_pii: What happens to the same kinds of PII in this agent's stored record
            (PostgreSQL ``messages`` prompts and completion, hence the run's transcript):
            ``off`` (the default: prompts as sent, the completion as returned, placeholders
            restored), ``redact`` or ``mask``. The run's result in Temporal is not changed
            (use the codec for history). A retry that reuses a recorded completion returns
            the recorded (redacted) text.
        version: Configuration version; bumped by whoever edits the catalog.
        tools: Tools the agent may call (at most 32): built-in ``package.tool`` names or
            ``mcp:<server>/<tool>``, each a string or a mapping with per-agent overrides
            (:class:`~chorus.contracts.tools.ToolRef`). Empty: one completion, no tools.
        max_tool_calls: Most tool calls in one step (0-64, default 8); the next one fails
            the step with ``ToolCallLimit``.
        tool_choice: ``auto`` (the model decides) or ``required`` (the first model turn of a
            step must call a tool; later turns decide freely).
        cache: The response cache (:class:`CachePolicy`); ``None`` (the default): off.

    """

    name: str = Field(pattern=AGENT_NAME_PATTERN)
    description: str = Field("", max_length=300)
    instructions: str = Field(min_length=1, max_length=MAX_INSTRUCTIONS_CHARS)
    providers: list[ProviderModel] = Field(min_length=1, max_length=MAX_PROVIDER_CHAIN)
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    max_tokens: int = Field(512, ge=1, le=32_768)
    output_schema: dict[str, Any] | None = None
    output_retries: int = Field(2, ge=0, le=3)
    timeout_s: float = Field(120.0, ge=1.0, le=1800.0)
    pii: PiiPolicy = "redact"
    record_pii: RecordPiiPolicy = "off"
    version: int = Field(1, ge=1)
    tools: list[ToolRef] = Field(default_factory=list, max_length=MAX_TOOLS_PER_AGENT)
    max_tool_calls: int = Field(8, ge=0, le=MAX_TOOL_CALLS_PER_STEP)
    tool_choice: Literal["auto", "required"] = "auto"
    cache: CachePolicy | None = None

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[ToolRef]) -> list[ToolRef]:
        names = [ref.name for ref in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tools: {', '.join(dupes)} listed more than once")
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _parse_provider_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ProviderModel.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("output_schema")
    @classmethod
    def _check_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            if value.get("type") != "object":
                raise ValueError('output_schema must be a JSON Schema with "type": "object"')
            if len(json.dumps(value)) > 20_000:
                raise ValueError("output_schema must be at most 20,000 characters as JSON")
        return value


# --- Provider limits (settings) ----------------------------------------------------------


class ProviderLimit(WireModel):
    """Limits of one provider across the fleet.

    Attributes:
        concurrency: Calls in flight at once, all workers together (0 = unlimited).
        rpm: Calls started per minute, all workers together (0 = unlimited).
        burst: Calls that may start at once when the provider has been idle; ``None`` means
            the whole minute's worth, ``max(1, ceil(rpm))``: a burst below the configured
            rate is not paced (the concurrency limit still caps the calls in flight).
        tpm: Tokens per minute, input + output, all workers together (0 = unlimited); each
            call reserves its worst case before it starts and gives back what it did not use
            (:mod:`chorus.governance.provider_limits`).
    """

    concurrency: int = Field(0, ge=0, le=10_000)
    rpm: float = Field(0.0, ge=0)
    burst: int | None = Field(None, ge=1, le=10_000)
    tpm: float = Field(0.0, ge=0)

    @property
    def effective_burst(self) -> int:
        """``burst``, or a minute's worth of calls (at least 1) when unset."""
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.rpm))


DEFAULT_PROVIDER_LIMITS: dict[str, ProviderLimit] = {
    "openai": ProviderLimit(concurrency=16, rpm=500),
    "anthropic": ProviderLimit(concurrency=8, rpm=50),
    "local": ProviderLimit(concurrency=1, rpm=0),
}
"""Default fleet-wide limits per provider (``CHORUS_PROVIDER_LIMITS`` overrides): OpenAI's
tier-1 500 RPM and Anthropic's tier-1 50 RPM (their "Rate limits" guides, 2026); the local
llama.cpp server answers one request at a time. See :mod:`chorus.governance.provider_limits`."""


# --- Orchestration plans -------------------------------------------------------------------


class AgentStep(WireModel):
    """Run one agent."""

    kind: Literal["agent"] = "agent"
    agent: str = Field(pattern=AGENT_NAME_PATTERN)


class SequentialStep(WireModel):
    """Run steps in order as a child workflow; each step sees the earlier steps' outputs."""

    kind: Literal["sequential"] = "sequential"
    name: str | None = Field(None, max_length=64)
    steps: list[Step] = Field(min_length=1, max_length=MAX_PLAN_STEPS)


def _check_min_successes(min_successes: int, branches: list[Any]) -> None:
    if min_successes > len(branches):
        raise ValueError(
            f"min_successes ({min_successes}) exceeds the number of branches ({len(branches)})"
        )


class ParallelStep(WireModel):
    """Fan out to branches at once as a child workflow, then fan in through an aggregator.

    Attributes:
        branches: Steps run concurrently on the same input (1-50).
        aggregator: Agent that merges the branch outputs; ``None`` joins them under headings.
        min_successes: Branches that must succeed for the step to succeed (default 1).

    """

    kind: Literal["parallel"] = "parallel"
    name: str | None = Field(None, max_length=64)
    branches: list[Step] = Field(min_length=1, max_length=MAX_PLAN_STEPS)
    aggregator: str | None = Field("aggregator", pattern=AGENT_NAME_PATTERN)
    min_successes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check_min_successes(self) -> ParallelStep:
        _check_min_successes(self.min_successes, self.branches)
        return self


class LoopStep(WireModel):
    """Repeat a body (e.g. writer then critic) until a predicate holds or a limit is reached.

    Each iteration runs ``body`` in order and sees the previous iteration's outputs. The step
    ends at the first of: ``until`` holds (``ended_by: predicate``), ``max_iterations``
    (``max_iterations``), or the loop's calls cost ``max_cost_usd`` (``max_cost``). Runs as a
    child workflow (``ChorusControl``) that continues as new every ``CONTINUE_AS_NEW_EVERY``
    iterations.

    Attributes:
        body: Steps of one iteration (agents, groups, gates).
        until: The predicate that ends the loop (e.g. ``critic.verdict == ready``).
        max_iterations: Iterations at most (1-50).
        max_cost_usd: Ends the loop once its calls cost this much (USD).
        output_from: Whose output is the loop's output (an agent or step name of the body;
            default the body's last step), e.g. ``writer`` for a writer/critic loop.
    """

    kind: Literal["loop"] = "loop"
    name: str | None = Field(None, max_length=64)
    body: list[Step] = Field(min_length=1, max_length=MAX_PLAN_STEPS)
    until: Until | None = None
    max_iterations: int = Field(3, ge=1, le=MAX_LOOP_ITERATIONS)
    max_cost_usd: float | None = Field(None, gt=0, le=10_000)
    output_from: str | None = Field(None, max_length=64)


class RouterStep(WireModel):
    """An agent picks which named route runs next, or ``done``.

    The router agent answers ``{"route": <route name or "done">, "reason": ...}`` (the workflow
    sets that output schema, replacing the agent's own). After a route runs, the router is
    asked again (seeing the route's output) while fewer than ``max_routes`` ran; choosing one
    more fails the step with ``RouteLimit``.

    Attributes:
        agent: The router agent.
        routes: Route name -> the step it runs (an agent or a group).
        max_routes: Routes one router step may run (1: pick once).
    """

    kind: Literal["router"] = "router"
    name: str | None = Field(None, max_length=64)
    agent: str = Field(pattern=AGENT_NAME_PATTERN)
    routes: dict[str, Step] = Field(min_length=1, max_length=20)
    max_routes: int = Field(1, ge=1, le=MAX_ROUTES_TAKEN)

    @field_validator("routes")
    @classmethod
    def _route_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(AGENT_NAME_PATTERN, name) or name == "done":
                raise ValueError(
                    f"routes: {name!r} is not a route name (lower-case letters, digits, - and "
                    f"_; not 'done')"
                )
        return value


Step = Annotated[
    AgentStep
    | SequentialStep
    | ParallelStep
    | LoopStep
    | RouterStep
    | HandoffStep
    | GroupChatStep
    | GateStep,
    Field(discriminator="kind"),
]
ControlStep = LoopStep | RouterStep | HandoffStep | GroupChatStep
"""Steps that run as a ``ChorusControl`` child workflow."""
CONTROL_KINDS: tuple[str, ...] = ("loop", "router", "handoff", "group_chat")


def _inner(step: Step) -> list[Step]:
    """The steps a step contains (routes and loop bodies included)."""
    if isinstance(step, SequentialStep):
        return list(step.steps)
    if isinstance(step, ParallelStep):
        return list(step.branches)
    if isinstance(step, LoopStep):
        return list(step.body)
    if isinstance(step, RouterStep):
        return list(step.routes.values())
    return []


def step_label(step: Step) -> str:
    """Human-readable label of a step: the agent name, or ``name``/``kind(a, b)`` for groups."""
    if isinstance(step, AgentStep):
        return step.agent
    if step.name:
        return step.name
    if isinstance(step, GateStep):
        return step.name
    if isinstance(step, LoopStep):
        return "loop(" + " > ".join(step_label(s) for s in step.body) + ")"
    if isinstance(step, RouterStep):
        return f"router {step.agent}(" + " / ".join(step.routes) + ")"
    if isinstance(step, HandoffStep):
        return "handoff(" + " -> ".join(step.agents) + ")"
    if isinstance(step, GroupChatStep):
        return f"chat {step.manager}(" + ", ".join(step.participants) + ")"
    sep = " > " if isinstance(step, SequentialStep) else " | "
    return "(" + sep.join(step_label(s) for s in _inner(step)) + ")"


def plan_agents(steps: list[Step]) -> list[str]:
    """All agent names a plan uses (aggregators, routers, managers included), first-use order."""
    names: list[str] = []

    def visit(step: Step) -> None:
        if isinstance(step, AgentStep):
            names.append(step.agent)
        elif isinstance(step, RouterStep):
            names.append(step.agent)
        elif isinstance(step, HandoffStep):
            names.extend([step.start, *step.agents])
        elif isinstance(step, GroupChatStep):
            names.extend([step.manager, *step.participants])
        for s in _inner(step):
            visit(s)
        if isinstance(step, ParallelStep) and step.aggregator:
            names.append(step.aggregator)

    for s in steps:
        visit(s)
    return list(dict.fromkeys(names))


def plan_gates(steps: list[Step]) -> list[str]:
    """Names of every gate in a plan, in order (repeats included: the caller refuses them)."""
    names: list[str] = []

    def visit(step: Step) -> None:
        if isinstance(step, GateStep):
            names.append(step.name)
        for s in _inner(step):
            visit(s)

    for s in steps:
        visit(s)
    return names


def plan_depth(steps: list[Step]) -> int:
    """Nesting depth of a plan: 1 for a flat list of agents (a loop or router body nests)."""

    def depth(step: Step) -> int:
        inner = _inner(step)
        if not inner:
            return 0
        return 1 + max(depth(s) for s in inner)

    return 1 + max((depth(s) for s in steps), default=0)


class PriorOutput(WireModel):
    """An earlier step's output, shown to later agents."""

    name: str
    output: str


class RunDocument(WireModel):
    """A run's input document: inline text, or a reference to text stored in PostgreSQL.

    Attributes:
        document: The text, when it travels inline (possibly empty).
        document_name: Name shown in prompts and the UI, e.g. the file name.
        document_ref: Set instead of ``document`` when the text is stored in PostgreSQL
            (larger than ``CHORUS_INLINE_TEXT_BYTES``: a claim check).
    """

    document: str = ""
    document_name: str | None = None
    document_ref: TextRef | None = None

    def document_size(self) -> int:
        """UTF-8 size of the document in bytes, inline or stored."""
        if self.document_ref is not None:
            return self.document_ref.size_bytes
        return len(self.document.encode())


class RunSubject(RunDocument):
    """What a run works on: its task, its document and the outputs it builds on.

    One model, passed whole from the SDK to the workflow, to every agent's LLM call and to the
    run's record. Its fields stay flat on the wire (workflow inputs and ``LLMRequest`` carry
    them as before), so payloads remain readable by the previous and the next version.

    Attributes:
        task: What the agents should do, in plain words.
        context: Outputs of steps that ran before (set by a parent workflow).
        api_key: Name of the API key whose request started the run (set by the HTTP API;
            ``None`` for runs started otherwise). Recorded on the run's row; every priced LLM
            call of the run, its child workflows' included, reserves against the key's daily
            budget (budget scope ``key:<name>``, :mod:`chorus.governance.budget`). Payloads
            written before the field existed decode with ``None``.
    """

    task: str = Field(min_length=1)
    context: list[PriorOutput] = Field(default_factory=list)
    api_key: str | None = Field(None, pattern=API_KEY_NAME_PATTERN)

    def subject(self) -> RunSubject:
        """This model's run subject alone (for a workflow input or an ``LLMRequest``)."""
        return RunSubject.model_construct(**{name: getattr(self, name) for name in _SUBJECT})

    def problem(self) -> str | None:
        """Why the task or document cannot run (control characters, an empty task), if so."""
        problem = control_problem("task", self.task) or control_problem("document", self.document)
        if problem is None and not self.task.strip():
            problem = "task: must not be empty"
        return problem


_SUBJECT = tuple(RunSubject.model_fields)


class _RunInput(RunSubject, EntryInput):
    agents: dict[str, ResolvedAgent] | None = None
    """Agent configurations pinned by a parent; ``None`` makes the workflow resolve them."""
    callback_url: str | None = Field(None, max_length=MAX_CALLBACK_URL_CHARS)
    """Top-level runs only: URL POSTed a signed
    :class:`~chorus.integrations.webhooks.CallbackPayload` when
    the run ends (child workflows never get one)."""
    callback_retry_initial_s: float = Field(1.0, gt=0, le=60)
    """First retry delay of the callback delivery in seconds (doubling to 60 s)."""


class SequentialInput(_RunInput):
    """Input of the sequential pipeline workflow.

    Attributes:
        task: What the agents should do, in plain words.
        document: The input document (text), possibly empty.
        document_name: Name shown in prompts and the UI, e.g. the file name.
        steps: Steps run in order (agents or nested groups run as child workflows).

    """

    steps: list[Step] = Field(min_length=1, max_length=MAX_PLAN_STEPS)

    @model_validator(mode="after")
    def _unique_gates(self) -> SequentialInput:
        check_unique_gates(self.steps)
        return self


def check_unique_gates(steps: list[Step]) -> None:
    """Refuse a plan that names one gate twice (a decision names the gate).

    Raises:
        ValueError: Naming the repeated gate.
    """
    names = plan_gates(steps)
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"gate {name!r} appears {names.count(name)} times; gate names must be unique "
                "in a plan (decisions name the gate)"
            )


class ParallelInput(_RunInput):
    """Input of the parallel fan-out/fan-in workflow; see :class:`ParallelStep` for fields."""

    branches: list[Step] = Field(min_length=1, max_length=MAX_PLAN_STEPS)
    aggregator: str | None = Field("aggregator", pattern=AGENT_NAME_PATTERN)
    min_successes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check_min_successes(self) -> ParallelInput:
        _check_min_successes(self.min_successes, self.branches)
        check_unique_gates(self.branches)
        return self


# --- Activities ----------------------------------------------------------------------------


CallbackStatus = Literal["succeeded", "failed", "cancelled", "awaiting_approval"]


class CallbackTotals(WireModel):
    """Usage of the whole run, child workflows included.

    Attributes:
        llm_calls: Successful agent calls.
        input_tokens: Prompt tokens, as reported by the providers.
        output_tokens: Completion tokens, as reported by the providers.
        cost_usd: Estimated cost in US dollars (Chorus price table).

    """

    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class CallbackPayload(WireModel):
    """The JSON body POSTed to a run's callback URL when the run ends.

    Unknown fields are ignored when parsing, so receivers keep working when fields are added.

    Attributes:
        workflow_id: The run's workflow id (``seq-...``/``par-...``).
        run_id: Temporal run id of that workflow execution.
        workflow_type: ``ChorusSequential`` or ``ChorusParallel``.
        status: ``succeeded``, ``failed`` or ``cancelled``; or ``awaiting_approval`` while
            the run waits at a gate (announced when it opens, again as a reminder).
        output: The final output (``succeeded`` only).
        error: Why the run failed or ``"cancelled"``; ``None`` on success.
        totals: Tokens and cost of the run (partial for failed runs, zero when cancelled).
        finished_at: When the run ended (UTC, workflow time); for ``awaiting_approval``, when
            the announcement was made.
        gate: The pending gate (``awaiting_approval`` only).

    """

    workflow_id: str
    run_id: str
    workflow_type: str
    status: CallbackStatus
    output: str | None = None
    error: str | None = None
    totals: CallbackTotals = CallbackTotals()
    finished_at: datetime
    gate: GateRecord | None = None


class DeliverCallbackInput(WireModel):
    """Input of ``chorus.deliver_callback``: POST ``payload``, signed, to ``url``.

    Attributes:
        url: Receiver URL (http/https, <= 2048 characters).
        payload: The body; the delivery id is derived from its workflow and run ids.
    """

    url: str = Field(max_length=MAX_CALLBACK_URL_CHARS)
    payload: CallbackPayload


class ResolveAgentsInput(WireModel):
    """Input of ``chorus.resolve_agents``: agent names to pin (drafts use this)."""

    names: list[str]


class StartRunInput(WireModel):
    """Input of ``chorus.start_run``: pin the run's agents and record the run row.

    Attributes:
        pattern: ``sequential`` or ``parallel``.
        task: The run's task.
        names: Agent names the run (and its children) will call.
        pinned: Configurations already pinned by a parent run; ``None`` reads the current
            versions from PostgreSQL.
        document_name: Name of the input document, if any.
        document_ref: Stored document, when it went by reference.
        document_bytes: UTF-8 size of the input document.
        parent_workflow_id: Parent run, for child workflows.
        root_workflow_id: Top-level run (itself for a top-level run).
        started_at: Workflow start time (``workflow.now()``).
        api_key: Name of the API key that started the run (its subject's ``api_key``).
    """

    pattern: Literal["sequential", "parallel"]
    task: str
    names: list[str]
    pinned: dict[str, ResolvedAgent] | None = None
    document_name: str | None = None
    document_ref: TextRef | None = None
    document_bytes: int = 0
    parent_workflow_id: str | None = None
    root_workflow_id: str
    started_at: datetime
    api_key: str | None = None

    @classmethod
    def for_run(
        cls,
        subject: RunSubject,
        *,
        pattern: Literal["sequential", "parallel"],
        names: list[str],
        pinned: dict[str, ResolvedAgent] | None,
        parent_workflow_id: str | None,
        root_workflow_id: str,
        started_at: datetime,
    ) -> StartRunInput:
        """The record of a run about to start: its subject's task and document, not the text."""
        return cls(
            pattern=pattern,
            task=subject.task,
            names=names,
            pinned=pinned,
            document_name=subject.document_name,
            document_ref=subject.document_ref,
            document_bytes=subject.document_size(),
            parent_workflow_id=parent_workflow_id,
            root_workflow_id=root_workflow_id,
            started_at=started_at,
            api_key=subject.api_key,
        )


class FinishRunInput(WireModel):
    """Input of ``chorus.finish_run``: close the run row; archive the transcript if top-level."""

    status: Literal["succeeded", "failed", "cancelled"]
    finished_at: datetime
    totals: RunTotals
    output: str | None = None
    error: str | None = None
    archive: bool = True


class SkippedProvider(WireModel):
    """A chain entry not called because this worker fleet cannot use it (e.g. no API key)."""

    provider: ProviderName
    model: str
    reason: str


class ResolvedAgent(WireModel):
    """An agent's configuration pinned for one run, with the providers usable now."""

    spec: AgentSpec
    skipped: list[SkippedProvider] = Field(default_factory=list)


class ResolveAgentsResult(WireModel):
    """Result of ``chorus.start_run``: the pinned configuration of each requested agent.

    ``provider_task_queues`` carries the worker's ``CHORUS_LLM_TASK_QUEUES`` choice into the
    history, so the run (and its replays) keep it whatever the setting says later;
    ``close_run_in_last_call`` does the same for ``CHORUS_CLOSE_RUN_IN_LAST_CALL`` (absent in
    histories written before it: ``False``, the run closes its row with ``chorus.finish_run``).
    """

    agents: dict[str, ResolvedAgent]
    provider_task_queues: bool = True
    close_run_in_last_call: bool = False


class LLMRequest(RunSubject):
    """Input of the ``chorus.call_llm`` activity: one completion from one provider.

    The activity assembles the user prompt from the run subject's ``task``, ``document`` (or
    the stored text of ``document_ref``) and ``context`` so it can shorten the document to fit
    the model's context window. It records the call (message and cost-ledger rows) under
    ``root_workflow_id``.
    """

    agent: str
    agent_version: int | None = None
    root_workflow_id: str | None = None
    provider: ProviderName
    model: str
    instructions: str
    temperature: float = 0.3
    max_tokens: int = 512
    output_schema: dict[str, Any] | None = None
    output_retries: int = 2
    """Times a completion that does not match ``output_schema`` is retried, with the
    validator's message fed back to the model, before the next provider is tried."""
    timeout_s: float = 120.0
    """HTTP timeout of the call in seconds (the activity's start-to-close is slightly longer)."""
    pii: PiiPolicy = "redact"
    """The agent's PII policy, applied to the prompt before it leaves the worker."""
    record_pii: RecordPiiPolicy = "off"
    """The agent's PII policy for the stored record (prompts and completion in PostgreSQL)."""
    close_run: CloseRun | None = None
    """Set on the last call of a run whose answer ends it (issue 19): the activity closes the
    run row itself when the answer is final and says so in ``LLMResponse.run_closed``, so
    the workflow needs no ``chorus.finish_run``. Workers that predate it ignore it."""
    tools: list[ToolSpec] = Field(default_factory=list)
    """Tools the model may call this turn (empty: a plain completion)."""
    turns: list[ToolTurn] = Field(default_factory=list)
    """Earlier turns of this step that called tools, with the tools' results, in order."""
    tool_choice: Literal["auto", "required"] = "auto"
    """``required``: the model must call a tool this turn (where the provider supports it)."""
    cache: CachePolicy | None = None
    """The agent's response cache (``None``: off); see :mod:`activities.response_cache`."""


class LLMResponse(WireModel):
    """Result of ``chorus.call_llm``.

    Attributes:
        provider: Provider that answered.
        model: Model name the provider reported (falls back to the requested name).
        output: Completion text.
        input_tokens: Prompt tokens, from the provider's usage report (cached ones included).
        output_tokens: Completion tokens, from the provider's usage report (reasoning included).
        cached_input_tokens: Input tokens read from the provider's prompt cache.
        cache_write_tokens: Input tokens written to the prompt cache (Anthropic).
        cost_usd: The usage priced with :mod:`chorus.governance.pricing` (cached input at its rate).
        cost_known: ``False`` when the model is missing from the price table (cost then 0).
        latency_ms: Wall time of the successful HTTP call in milliseconds.
        attempt: Activity attempt that succeeded (1 = first try).
        finish_reason: Provider's stop reason (``stop``, ``length``, ``end_turn``...).
        truncated_chars: Characters cut from the document/context to fit the context window.
        tool_calls: Tools the model asked for (then ``output`` is any text it wrote with them).
        cached: The completion came from the agent's response cache: no provider call, no
            tokens, cost 0 (:mod:`activities.response_cache`).

    """

    provider: ProviderName
    model: str
    output: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    latency_ms: float = 0.0
    attempt: int = 1
    finish_reason: str | None = None
    truncated_chars: int = 0
    budget_alerts: list[BudgetAlert] = Field(default_factory=list)
    """Daily budget alert thresholds this call's cost crossed (each fires once per period);
    the workflow delivers each with the ``chorus.deliver_budget_alert`` activity."""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    cached: bool = False
    run_closed: RunClosed | None = None
    """The run row this call closed (``LLMRequest.close_run``); ``None`` when it closed none
    (not asked, an answer that calls tools, PostgreSQL refused, or a worker predating it)."""


class BudgetAlert(WireModel):
    """A budget period's spend crossed its alert threshold: the body of the alert webhook.

    Attributes:
        period: Budget period key, e.g. ``daily:2026-11-30``.
        spent_usd: Spend of the period in USD when the threshold was crossed.
        alert_usd: The alert threshold in USD.
        limit_usd: The period's limit in USD, if one is set.
    """

    period: str
    spent_usd: float | None = None
    alert_usd: float | None = None
    limit_usd: float | None = None


# --- Results and progress ------------------------------------------------------------------

StepStatus = Literal["pending", "running", "succeeded", "failed"]
StepKind = Literal[
    "agent",
    "sequential",
    "parallel",
    "aggregator",
    "loop",
    "router",
    "handoff",
    "group_chat",
    "gate",
    "iteration",
]
ResultKind = Literal[
    "agent",
    "sequential",
    "parallel",
    "loop",
    "router",
    "handoff",
    "group_chat",
    "gate",
    "iteration",
]
"""``iteration``: one pass of a loop's body (its ``steps``)."""


class ProviderAttempt(WireModel):
    """What happened with one provider of an agent's chain during one step."""

    provider: ProviderName
    model: str
    status: Literal["succeeded", "failed", "skipped"]
    attempts: int = 0
    error_type: str | None = None
    error: str | None = None


class StepResult(WireModel):
    """Outcome of one step: an agent call, or a child workflow with its own steps.

    For a child workflow, tokens and cost are the child's totals and ``latency_ms`` its wall time.
    An agent that used tools sums every model turn of the step (tokens, cost, latency,
    attempts); ``tool_calls`` lists its calls in order and ``llm_calls`` counts its model turns
    (``None``: one, as before tools existed).
    """

    name: str
    kind: ResultKind = "agent"
    status: Literal["succeeded", "failed"]
    agent: str | None = None
    agent_version: int | None = None
    provider: ProviderName | None = None
    model: str | None = None
    output: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0
    providers_tried: list[ProviderAttempt] = Field(default_factory=list)
    truncated_chars: int = 0
    error: str | None = None
    child_workflow_id: str | None = None
    steps: list[StepResult] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    llm_calls: int | None = None
    control: ControlOutcome | None = None
    """What a control step (loop, router, handoff, group chat, gate) did and what ended it."""
    error_type: str | None = None
    """Why a control step failed, when it was its own rule (``GateRejected``, ``GateTimedOut``,
    ``RouteLimit``, ``HandoffLimit``, ``ControlAnswerInvalid``); the run fails with it."""
    cached: bool = False
    """Every model turn of the agent's step came from its response cache (cost 0)."""

    @property
    def output_json(self) -> dict[str, Any] | None:
        """The output parsed, when it is a JSON object; else ``None``.

        Agents with an ``output_schema`` always answer with one: it is validated against it.
        """
        try:
            value = json.loads(self.output)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class RunTotals(WireModel):
    """Totals over every agent call of a run, child workflows included."""

    llm_calls: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    llm_latency_ms: float = 0.0
    wall_ms: float = 0.0


class CloseRun(WireModel):
    """What the last call of a run needs to close the run row (``LLMRequest.close_run``).

    Attributes:
        started_at: The run's start (workflow time), for ``wall_ms``.
        totals_before: The run's totals without this call: every earlier step and the
            failed attempts of this step's provider chain, cost not yet rounded
            (:func:`totals_with_final_call` adds the call and rounds).
        archive: Top-level run: archive the transcript and end the live stream.
    """

    started_at: datetime
    totals_before: RunTotals
    archive: bool = True


class RunClosed(WireModel):
    """The run row a call closed as ``succeeded`` (``LLMResponse.run_closed``).

    Attributes:
        finished_at: When the row was closed (the activity's clock, never before the run's
            start); the workflow's result takes it as its ``finished_at``.
        totals: The totals written to the row.
    """

    finished_at: datetime
    totals: RunTotals


def totals_with_final_call(
    before: RunTotals, response: LLMResponse, started_at: datetime, finished_at: datetime
) -> RunTotals:
    """``before`` plus one successful plain call, as the workflow sums a run's steps.

    The same additions in the same order as ``workflows._base.totals_of`` (a step without
    tools counts one call, its attempts, tokens, cost and latency; the cost is rounded to 8
    decimals at the end), so the workflow can check the row's totals against its own exactly.
    """
    return RunTotals(
        llm_calls=before.llm_calls + 1,
        attempts=before.attempts + response.attempt,
        input_tokens=before.input_tokens + response.input_tokens,
        output_tokens=before.output_tokens + response.output_tokens,
        cost_usd=round(before.cost_usd + response.cost_usd, 8),
        llm_latency_ms=before.llm_latency_ms + response.latency_ms,
        wall_ms=(finished_at - started_at).total_seconds() * 1000.0,
    )


class FailedBranch(WireModel):
    """A parallel branch that failed, and why."""

    name: str
    error: str


class RunResult(WireModel):
    """Result of a Chorus workflow (sequential or parallel)."""

    workflow_id: str
    pattern: Literal["sequential", "parallel"]
    task: str
    output: str
    steps: list[StepResult]
    totals: RunTotals
    failed_branches: list[FailedBranch] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime


class StepProgress(WireModel):
    """Live state of one step, returned by the ``progress`` query."""

    name: str
    kind: StepKind = "agent"
    status: StepStatus = "pending"
    provider: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    tool_calls: int = 0
    """Tool calls the step's agent has made so far."""
    child_workflow_id: str | None = None
    """The child workflow running this step (groups and control steps), once started."""
    note: str | None = None
    """What a control step is doing, e.g. ``iteration 2 of 3`` or ``route billing``."""


class RunProgress(WireModel):
    """Result of the ``progress`` query.

    Attributes:
        pattern: ``sequential``/``parallel`` for runs; the control kind (``loop``, ``router``,
            ``handoff``, ``group_chat``) for a ``ChorusControl`` child workflow.
        gates: This workflow's gates, pending and decided.
        rounds: Iterations, routes, hops or turns a control workflow has run.
    """

    pattern: Literal["sequential", "parallel", "loop", "router", "handoff", "group_chat"]
    started_at: datetime
    steps: list[StepProgress]
    done: bool = False
    gates: list[GateRecord] = Field(default_factory=list)
    rounds: int = 0


class ControlCarry(WireModel):
    """State a ``ChorusControl`` workflow carries across continue-as-new.

    Attributes:
        rounds: Iterations, routes, hops or turns done.
        results: Every step result so far (the step's ``steps``).
        choices: Decisions so far (routes, speakers, hand-offs).
        transcript: What the next round sees beyond the run's context: the previous
            iteration's outputs (loop) or the conversation (handoff, group chat, router).
        current: The agent holding the conversation (handoff).
        continued_as_new: Times continued as new so far.
        gate_seq: Gates opened so far (keys stay unique across runs of the chain).
        tool_calls: Tool calls made so far (the run's cap holds across the chain).
    """

    rounds: int = 0
    results: list[StepResult] = Field(default_factory=list)
    choices: list[RouteChoice] = Field(default_factory=list)
    transcript: list[PriorOutput] = Field(default_factory=list)
    current: str | None = None
    continued_as_new: int = 0
    gate_seq: int = 0
    tool_calls: int = 0


class ControlInput(_RunInput):
    """Input of the ``ChorusControl`` workflow: one control step of a run, as a child workflow.

    Attributes:
        step: The loop, router, handoff or group chat to run.
        provider_task_queues: The parent's choice of LLM task queues.
        carry: State carried over by continue-as-new (``None`` on the first run).
        continue_as_new_every: Rounds per workflow run before continuing as new.
    """

    step: Annotated[
        LoopStep | RouterStep | HandoffStep | GroupChatStep, Field(discriminator="kind")
    ]
    provider_task_queues: bool = True
    carry: ControlCarry | None = None
    continue_as_new_every: int = Field(CONTINUE_AS_NEW_EVERY, ge=1, le=1000)


SequentialStep.model_rebuild()
ParallelStep.model_rebuild()
LoopStep.model_rebuild()
RouterStep.model_rebuild()
ControlCarry.model_rebuild()
ControlInput.model_rebuild()
StepResult.model_rebuild()
SequentialInput.model_rebuild()
ParallelInput.model_rebuild()
StartRunInput.model_rebuild()
FinishRunInput.model_rebuild()
LLMRequest.model_rebuild()
LLMResponse.model_rebuild()
