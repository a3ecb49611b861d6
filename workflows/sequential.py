"""Sequential pipeline workflow: agents run in order, each seeing the earlier outputs."""

from __future__ import annotations

from temporalio import workflow

from workflows._base import RunWorkflowBase, pass_on, require_input, run_error_type

with workflow.unsafe.imports_passed_through():
    from chorus.contracts.models import (
        RunResult,
        SequentialInput,
        StepResult,
        plan_agents,
        step_label,
    )
    from chorus.contracts.names import SEQUENTIAL_WORKFLOW


@workflow.defn(name=SEQUENTIAL_WORKFLOW)
class SequentialWorkflow(RunWorkflowBase):
    """Run ``input.steps`` one after another.

    Each agent sees the task, the input document and every earlier step's output (a nested
    group runs as a child workflow and contributes its final output). The run fails at the first
    step that fails, with the partial result as the error's details. The run is recorded in
    PostgreSQL from start to end (``chorus.start_run``; the last step's call closes the row
    when it is an agent without tools, else ``chorus.finish_run``).
    """

    pattern = "sequential"

    @workflow.init
    def __init__(self, input: SequentialInput | None = None) -> None:
        self._init_progress([(step_label(s), s.kind) for s in input.steps] if input else [])

    @workflow.run
    async def run(self, input: SequentialInput | None = None) -> RunResult:
        """Run the pipeline and return every step's result and the run totals.

        Raises:
            ApplicationError: ``StepFailed`` (non-retryable) naming the failed step and why;
                details[0] is the partial :class:`~chorus.contracts.models.RunResult`.
                ``InvalidInput``
                (non-retryable) when started without an input.
        """
        input = require_input(input, SequentialInput, SEQUENTIAL_WORKFLOW)
        await self._start_run(input, plan_agents(input.steps))
        return await self._run_body(self._pipeline(input))

    async def _pipeline(self, input: SequentialInput) -> RunResult:
        context = list(input.context)
        results: list[StepResult] = []
        last = len(input.steps) - 1
        for index, step in enumerate(input.steps):
            result = await self._run_step(
                index, step, context, earlier=results if index == last else None
            )
            results.append(result)
            if result.status == "failed":
                partial = self._finish(output="", steps=results)
                raise self._fail(
                    f"step {index + 1} of {len(input.steps)} ({result.name}) failed: "
                    f"{result.error}",
                    run_error_type(result),
                    partial,
                )
            context = pass_on(context, result)
        return self._finish(output=results[-1].output, steps=results)
