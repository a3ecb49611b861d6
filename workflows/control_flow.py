"""Control-flow workflow: a run's loop, router, handoff or group chat, as a child workflow.

What runs next is decided at run time, by a predicate on a structured output (loop), by an
agent's structured answer (router, hand-off, group-chat manager), never by workflow code
reading the clock or chance, so every decision is an activity result in the history and the
workflow replays exactly. Each kind is bounded (iterations, routes, hops, turns, cost) and
continues as new every ``input.continue_as_new_every`` rounds (or when Temporal suggests it),
carrying its state (:class:`~chorus.contracts.models.ControlCarry`), so a long loop or chat
never grows one history without end.

The workflow returns the control step's :class:`~chorus.contracts.models.StepResult`: every
step it ran (loop iterations as ``iteration`` results), its choices and what ended it. It
records no run row of its own: its LLM calls are recorded under the top-level run.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows._base import (
    RunWorkflowBase,
    await_deliveries,
    pass_on,
    require_input,
    run_error_type,
    totals_of,
)

with workflow.unsafe.imports_passed_through():
    from chorus.contracts import activities, errors
    from chorus.contracts.control import (
        ControlOutcome,
        GroupChatStep,
        HandoffStep,
        RouteChoice,
        handoff_schema,
        router_schema,
    )
    from chorus.contracts.models import (
        AgentStep,
        ControlCarry,
        ControlInput,
        LoopStep,
        PriorOutput,
        ResolveAgentsInput,
        ResolvedAgent,
        RouterStep,
        Step,
        StepProgress,
        StepResult,
        plan_agents,
        step_label,
    )
    from chorus.contracts.names import CONTROL_WORKFLOW


class _Stop(Exception):
    """A control step failed by its own rule (limit, bad choice) or a step inside it failed."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


@workflow.defn(name=CONTROL_WORKFLOW)
class ControlWorkflow(RunWorkflowBase):
    """Run one loop, router, handoff or group-chat step of a run (see the module docstring).

    Each agent call and nested group appears as its own progress entry (``writer #2``,
    ``triage → billing``) in the ``progress`` query and the Temporal UI.
    """

    @workflow.init
    def __init__(self, input: ControlInput | None = None) -> None:
        self.pattern = input.step.kind if input is not None else "loop"
        self._init_progress([])
        self.carry = ControlCarry()
        self.rounds_this_run = 0

    @workflow.run
    async def run(self, input: ControlInput | None = None) -> StepResult:
        """Run the control step and return its result.

        Raises:
            ApplicationError: Non-retryable, with the step's partial result as details[0]:
                ``RouteLimit``, ``HandoffLimit``, ``ControlAnswerInvalid``, ``GateRejected``,
                ``GateTimedOut``, or ``StepFailed`` when a step inside failed;
                ``InvalidInput`` when started without an input.
        """
        input = require_input(input, ControlInput, CONTROL_WORKFLOW)
        await self._adopt(input)
        step = input.step
        try:
            if isinstance(step, LoopStep):
                result = await self._loop(input, step)
            elif isinstance(step, RouterStep):
                result = await self._router(input, step)
            elif isinstance(step, HandoffStep):
                result = await self._handoff(input, step)
            else:
                result = await self._group_chat(input, step)
        except _Stop as stop:
            self.state.done = True
            self._publish_details()
            await await_deliveries(self.state.alerts)
            partial = self._result(step, "failed", "", None, error=stop.message)
            partial.error_type = stop.error_type
            raise ApplicationError(
                stop.message, partial, type=stop.error_type, non_retryable=True
            ) from None
        self.state.done = True
        self._publish_details()
        await await_deliveries(self.state.alerts)
        return result

    async def _adopt(self, input: ControlInput) -> None:
        """Take the run's subject, agents and carried state from the input."""
        s = self.state
        info = workflow.info()
        s.subject = input.subject()
        s.root_workflow_id = info.root.workflow_id if info.root else info.workflow_id
        s.gate_callback_url = input.callback_url
        s.callback_retry_initial_s = input.callback_retry_initial_s
        s.provider_queues = input.provider_task_queues
        if input.carry is not None:
            self.carry = input.carry
        s.rounds = self.carry.rounds
        s.gate_seq = self.carry.gate_seq
        s.tool_use.calls = self.carry.tool_calls
        if input.agents is not None:
            s.agents = input.agents
        else:  # started by a plain client: pin the current configurations
            resolved = await self._bookkeeping(
                activities.RunBookkeeping.resolve_agents,
                ResolveAgentsInput(names=plan_agents([input.step])),
                start_to_close_timeout=timedelta(seconds=30),
                summary="Pin agents",
            )
            s.agents = resolved.agents
            s.provider_queues = resolved.provider_task_queues

    # --- rounds and continue-as-new ----------------------------------------------------------

    def _next_round(self, input: ControlInput) -> None:
        """Start a round, continuing as new first when this run has done its share."""
        if self.rounds_this_run >= input.continue_as_new_every or (
            self.rounds_this_run > 0 and workflow.info().is_continue_as_new_suggested()
        ):
            raise _ContinueAsNew
        self.rounds_this_run += 1
        self.carry.rounds += 1
        self.state.rounds = self.carry.rounds

    async def _continue_as_new(self, input: ControlInput) -> None:
        await await_deliveries(self.state.alerts)
        self.carry.continued_as_new += 1
        self.carry.gate_seq = self.state.gate_seq
        self.carry.tool_calls = self.state.tool_use.calls
        workflow.continue_as_new(input.model_copy(update={"carry": self.carry}))

    async def _run(self, input: ControlInput, body: Any) -> StepResult:
        """Await ``body`` (the kind's rounds); continue as new when a round asks to."""
        try:
            result: StepResult = await body
        except _ContinueAsNew:
            await self._continue_as_new(input)
            raise AssertionError("unreachable: continue_as_new raises") from None
        return result

    def _child_id(self, index: int) -> str:
        """Children of later runs of this workflow (after continue-as-new) get distinct ids."""
        base = workflow.info().workflow_id
        runs = self.carry.continued_as_new
        return f"{base}-c{runs}-s{index + 1}" if runs else f"{base}-s{index + 1}"

    async def _step(
        self, step: Step, context: list[PriorOutput], label: str | None = None
    ) -> StepResult:
        """Run one inner step as a new progress entry; a failure stops the control step."""
        index = len(self.state.progress)
        self.state.progress.append(StepProgress(name=label or step_label(step), kind=step.kind))
        result = await self._run_step(index, step, context)
        self.carry.results.append(result)
        if result.status == "failed":
            raise _Stop(f"{result.name} failed: {result.error}", run_error_type(result))
        return result

    async def _agent(
        self,
        name: str,
        context: list[PriorOutput],
        *,
        schema: dict[str, Any] | None,
        label: str,
    ) -> StepResult:
        """Call one agent, with ``schema`` replacing its output schema (routers, hand-offs)."""
        resolved = self.state.agents[name]
        if schema is not None:
            resolved = ResolvedAgent(
                spec=resolved.spec.model_copy(update={"output_schema": schema}),
                skipped=resolved.skipped,
            )
        index = len(self.state.progress)
        self.state.progress.append(StepProgress(name=label, kind="agent"))
        self._mark(index, "running")
        result = await self._run_agent(resolved, context=context, progress_index=index)
        self._mark(index, result.status, error=result.error)
        self.carry.results.append(result)
        if result.status == "failed":
            raise _Stop(f"{label} failed: {result.error}", errors.STEP_FAILED)
        return result

    def _result(
        self,
        step: LoopStep | RouterStep | HandoffStep | GroupChatStep,
        status: Literal["succeeded", "failed"],
        output: str,
        ended_by: str | None,
        *,
        error: str | None = None,
    ) -> StepResult:
        c = self.carry
        now = workflow.now()
        totals = totals_of(c.results, self.state.started_at, now)
        return StepResult(
            name=step_label(step),
            kind=step.kind,
            status=status,
            output=output,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            cost_usd=totals.cost_usd,
            latency_ms=totals.llm_latency_ms,
            attempts=totals.attempts,
            error=error,
            steps=list(c.results),
            control=ControlOutcome(
                ended_by=ended_by or "failed",
                rounds=c.rounds
                if isinstance(step, LoopStep)
                else sum(ch.choice not in ("done", "none") for ch in c.choices),
                choices=list(c.choices),
                continued_as_new=c.continued_as_new,
            ),
        )

    def _choose(self, choice: RouteChoice) -> None:
        """Record a decision; the deciding step's progress entry (and the UI) shows it."""
        self.carry.choices.append(choice)
        why = f": {choice.reason[:100]}" if choice.reason else ""
        self.state.progress[-1].note = f"chose {choice.choice}{why}"
        self._publish_details()

    def _cost(self) -> float:
        return totals_of(self.carry.results, self.state.started_at, workflow.now()).cost_usd

    # --- loop --------------------------------------------------------------------------------

    async def _loop(self, input: ControlInput, step: LoopStep) -> StepResult:
        return await self._run(input, self._loop_rounds(input, step))

    async def _loop_rounds(self, input: ControlInput, step: LoopStep) -> StepResult:
        c = self.carry
        ended_by: str | None = None
        while ended_by is None:
            if c.rounds >= step.max_iterations:
                ended_by = "max_iterations"
                break
            if step.max_cost_usd is not None and self._cost() >= step.max_cost_usd:
                ended_by = "max_cost"
                break
            self._next_round(input)
            number = c.rounds
            seen = [*self.state.subject.context, *c.transcript]  # + the previous iteration
            produced: list[PriorOutput] = []
            before = len(c.results)
            for inner in step.body:
                result = await self._step(
                    inner, [*seen, *produced], f"{step_label(inner)} #{number}"
                )
                produced = pass_on(produced, result)
            done = c.results[before:]
            del c.results[before:]
            c.results.append(
                StepResult(
                    name=f"iteration {number}",
                    kind="iteration",
                    status="succeeded",
                    output=done[-1].output,
                    steps=done,
                )
            )
            c.transcript = [
                PriorOutput(name=f"{p.name} (iteration {number})", output=p.output)
                for p in produced
            ]
            if step.until is not None and step.until.holds(_output_of(done, step.until.agent)):
                ended_by = "predicate"
        last = c.results[-1].steps if c.results else []
        return self._result(step, "succeeded", _output_of(last, step.output_from), ended_by)

    # --- router ------------------------------------------------------------------------------

    async def _router(self, input: ControlInput, step: RouterStep) -> StepResult:
        return await self._run(input, self._router_rounds(input, step))

    async def _router_rounds(self, input: ControlInput, step: RouterStep) -> StepResult:
        c = self.carry
        agents = self.state.agents
        menu = "\n".join(
            f"- {route}: {_describe(target, agents)}" for route, target in step.routes.items()
        )
        rules = PriorOutput(
            name="routes",
            output="Pick the route that should handle the task next, or 'done' when nothing "
            f'more is needed. Answer with JSON {{"route": ..., "reason": ...}}.\n{menu}',
        )
        taken = [ch for ch in c.choices if ch.choice != "done"]
        while True:
            self._next_round(input)
            context = [*self.state.subject.context, rules, *c.transcript]
            answer = await self._agent(
                step.agent,
                context,
                schema=router_schema(list(step.routes)),
                label=f"{step.agent} (router)",
            )
            route, reason = _choice(answer.output, "route", [*step.routes, "done"], step.agent)
            self._choose(RouteChoice(by=step.agent, choice=route, reason=reason))
            if route == "done":
                output = c.transcript[-1].output if c.transcript else reason
                return self._result(step, "succeeded", output, "done")
            if len(taken) >= step.max_routes:
                raise _Stop(
                    f"router {step.agent} chose route {route!r} after {len(taken)} route(s); "
                    f"max_routes is {step.max_routes}",
                    errors.ROUTE_LIMIT,
                )
            result = await self._step(
                step.routes[route],
                [*self.state.subject.context, *c.transcript],
                f"{step.agent} → {route}",
            )
            taken.append(c.choices[-1])
            c.transcript = [*c.transcript, PriorOutput(name=f"route {route}", output=result.output)]
            if step.max_routes == 1:
                return self._result(step, "succeeded", result.output, "routed")

    # --- handoff -----------------------------------------------------------------------------

    async def _handoff(self, input: ControlInput, step: HandoffStep) -> StepResult:
        return await self._run(input, self._handoff_rounds(input, step))

    async def _handoff_rounds(self, input: ControlInput, step: HandoffStep) -> StepResult:
        c = self.carry
        current = c.current or step.start
        while True:
            self._next_round(input)
            c.current = current
            targets = step.agents[current]
            context = [*self.state.subject.context, *c.transcript]
            if targets:
                context.append(
                    PriorOutput(
                        name="handoff",
                        output="Answer the task yourself (handoff_to: none), or hand the "
                        "conversation to one of: "
                        + ", ".join(
                            f"{t} ({_describe(AgentStep(agent=t), self.state.agents)})"
                            for t in targets
                        )
                        + '. Answer with JSON {"reply": ..., "handoff_to": ...}.',
                    )
                )
            answer = await self._agent(
                current,
                context,
                schema=handoff_schema(targets) if targets else None,
                label=f"{current} (hop {len(c.choices)})",
            )
            if targets:
                target, reply = _choice(
                    answer.output, "handoff_to", [*targets, "none"], current, text_key="reply"
                )
            else:
                reply, target = answer.output, "none"
            c.transcript = [*c.transcript, PriorOutput(name=current, output=reply)]
            self._choose(RouteChoice(by=current, choice=target, reason=""))
            if target == "none":
                return self._result(step, "succeeded", reply, "answered")
            hops = sum(ch.choice != "none" for ch in c.choices)
            if hops > step.max_hops:
                path = " → ".join([step.start, *(ch.choice for ch in c.choices)])
                raise _Stop(
                    f"hand-off went past max_hops ({step.max_hops}): {path}",
                    errors.HANDOFF_LIMIT,
                )
            current = target

    # --- group chat --------------------------------------------------------------------------

    async def _group_chat(self, input: ControlInput, step: GroupChatStep) -> StepResult:
        return await self._run(input, self._chat_rounds(input, step))

    async def _chat_rounds(self, input: ControlInput, step: GroupChatStep) -> StepResult:
        c = self.carry
        agents = self.state.agents
        rules = PriorOutput(
            name="chat",
            output="You manage a conversation between agents. Pick who speaks next, or "
            "'done' when the task is answered. Answer with JSON "
            '{"route": <speaker or "done">, "reason": ...}. Participants:\n'
            + "\n".join(
                f"- {p}: {_describe(AgentStep(agent=p), agents)}" for p in step.participants
            ),
        )
        ended_by: str | None = None
        while ended_by is None:
            turns = sum(ch.choice != "done" for ch in c.choices)
            if turns >= step.max_turns:
                ended_by = "max_turns"
                break
            if step.max_cost_usd is not None and self._cost() >= step.max_cost_usd:
                ended_by = "max_cost"
                break
            self._next_round(input)
            context = [*self.state.subject.context, *c.transcript]
            pick = await self._agent(
                step.manager,
                [*context, rules],
                schema=router_schema(list(step.participants)),
                label=f"{step.manager} (manager)",
            )
            speaker, reason = _choice(
                pick.output, "route", [*step.participants, "done"], step.manager
            )
            self._choose(RouteChoice(by=step.manager, choice=speaker, reason=reason))
            if speaker == "done":
                ended_by = "done"
                break
            said = await self._agent(
                speaker, context, schema=None, label=f"{speaker} (turn {turns + 1})"
            )
            c.transcript = [*c.transcript, PriorOutput(name=speaker, output=said.output)]
            rule = step.until
            if rule is not None and (rule.agent is None or rule.agent == speaker):
                if rule.holds(said.output):
                    ended_by = "phrase" if rule.phrase is not None else "predicate"
        output = c.transcript[-1].output if c.transcript else ""
        return self._result(step, "succeeded", output, ended_by)


class _ContinueAsNew(Exception):
    """Raised by a round that should start in a new run of the workflow."""


def _describe(step: Step, agents: dict[str, ResolvedAgent]) -> str:
    """A route or participant in a few words: the agent's description, or the group's label."""
    if isinstance(step, AgentStep):
        resolved = agents.get(step.agent)
        description = resolved.spec.description if resolved else ""
        return f"{step.agent} — {description}" if description else step.agent
    return step_label(step)


def _output_of(results: list[StepResult], name: str | None) -> str:
    """The output of the last result named ``name`` (agent or step name); else the last."""
    if name is not None:
        for result in reversed(results):
            if name in (result.agent, result.name):
                return result.output
    return results[-1].output if results else ""


def _choice(
    output: str, key: str, allowed: list[str], agent: str, *, text_key: str = "reason"
) -> tuple[str, str]:
    """``(choice, text)`` from an agent's JSON answer.

    Raises:
        _Stop: ``ControlAnswerInvalid`` when the answer is not JSON or names no allowed choice.
    """
    try:
        value = json.loads(output)
    except ValueError:
        value = None
    choice = value.get(key) if isinstance(value, dict) else None
    if not isinstance(choice, str) or choice not in allowed:
        raise _Stop(
            f"{agent} answered {output[:200]!r}, not a JSON object whose {key!r} is one of "
            f"{', '.join(allowed)}",
            errors.CONTROL_ANSWER_INVALID,
        )
    text = value.get(text_key) if isinstance(value, dict) else None
    return choice, text if isinstance(text, str) else ""
