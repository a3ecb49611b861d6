"""Parallel fan-out/fan-in workflow: branches work on the same input, an aggregator merges."""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows._base import RunWorkflowBase, require_input

with workflow.unsafe.imports_passed_through():
    from chorus.contracts import errors
    from chorus.contracts.models import (
        ParallelInput,
        PriorOutput,
        RunResult,
        StepKind,
        plan_agents,
        step_label,
    )
    from chorus.contracts.names import PARALLEL_WORKFLOW


@workflow.defn(name=PARALLEL_WORKFLOW)
class ParallelWorkflow(RunWorkflowBase):
    """Fan out ``input.branches`` at once, then fan in through ``input.aggregator``.

    A failed branch does not sink the run while at least ``input.min_successes`` branches
    succeeded; the result names the failed branches and why. With no aggregator the output is
    the successful branches' outputs under headings. The run is recorded in PostgreSQL.
    """

    pattern = "parallel"

    @workflow.init
    def __init__(self, input: ParallelInput | None = None) -> None:
        names: list[tuple[str, StepKind]] = []
        if input is not None:
            names = [(step_label(b), b.kind) for b in input.branches]
            if input.aggregator:
                names.append((input.aggregator, "aggregator"))
        self._init_progress(names)

    @workflow.run
    async def run(self, input: ParallelInput | None = None) -> RunResult:
        """Run the branches concurrently, then the aggregator.

        Raises:
            ApplicationError: ``TooFewBranchesSucceeded`` when fewer than ``min_successes``
                branches succeeded, or ``StepFailed`` when the aggregator failed (both
                non-retryable; details[0] is the partial result). ``InvalidInput``
                (non-retryable) when started without an input.
        """
        input = require_input(input, ParallelInput, PARALLEL_WORKFLOW)
        extra = [input.aggregator] if input.aggregator else []
        await self._start_run(input, list(dict.fromkeys(plan_agents(input.branches) + extra)))
        return await self._run_body(self._fan_out_fan_in(input))

    async def _fan_out_fan_in(self, input: ParallelInput) -> RunResult:
        results = list(
            await asyncio.gather(
                *(
                    self._run_step(index, branch, list(input.context))
                    for index, branch in enumerate(input.branches)
                )
            )
        )
        succeeded = [r for r in results if r.status == "succeeded"]
        failed = [(r.name, r.error or "failed") for r in results if r.status == "failed"]
        if len(succeeded) < input.min_successes:
            partial = self._finish(output="", steps=results, failed=failed)
            raise self._fail(
                f"only {len(succeeded)} of {len(results)} branches succeeded, "
                f"{input.min_successes} required; failed: "
                + "; ".join(f"{name}: {error}" for name, error in failed),
                errors.TOO_FEW_BRANCHES,
                partial,
            )
        if not input.aggregator:
            output = "\n\n".join(f"## {r.name}\n\n{r.output}" for r in succeeded)
            return self._finish(output=output, steps=results, failed=failed)

        index = len(input.branches)
        self._mark(index, "running")
        aggregator = self.state.agents[input.aggregator]
        merged = await self._run_agent(
            aggregator,
            context=list(input.context)
            + [PriorOutput(name=r.name, output=r.output) for r in succeeded],
            progress_index=index,
            closing=self._closing_call(aggregator, results),
        )
        self._mark(index, merged.status, error=merged.error)
        results.append(merged)
        if merged.status == "failed":
            partial = self._finish(output="", steps=results, failed=failed)
            raise self._fail(
                f"aggregator {input.aggregator} failed: {merged.error}", errors.STEP_FAILED, partial
            )
        return self._finish(output=merged.output, steps=results, failed=failed)
