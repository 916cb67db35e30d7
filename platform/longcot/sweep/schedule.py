"""Running the variants: each is one Ray task with declared resources; a failure stays with its variant.

``execute_variant`` is the task body: it runs the variant's job (``pipeline.run_job``) in the variant's
directory and returns its scores. ``run_variants`` is the driver: it skips variants that finished in an
earlier run, keeps at most ``max_concurrent`` tasks in flight, and turns any error of a variant (an
exception, a crashed worker) into a ``failed`` outcome while the others go on.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console

from longcot.settings import StageResources
from longcot.sweep.variants import VariantOutcome, VariantPlan

console = Console(stderr=True, highlight=False)  # the sweep's progress lines, plain


def execute_variant(plan: VariantPlan) -> VariantOutcome:
    """Run one variant's job in its directory; returns its ``VariantOutcome`` (saved there too)."""
    from longcot.config import JobConfig
    from longcot.eval.report import load_scores
    from longcot.pipeline import run_job
    from longcot.rundir import RunDir

    started = time.perf_counter()
    run_dir = RunDir(plan.directory)
    job = JobConfig.model_validate(plan.job)
    run_job(job, run_dir, input_path=plan.input_path, progress=False)
    stages = run_dir.manifest["stages"]
    results = stages["eval"]["artifacts"]["eval_results"]
    scores, _ = load_scores(results)
    return plan.outcome(
        "finished",
        scores=[s.as_dict() for s in scores],
        results=results,
        stages={name: _brief_stage(entry) for name, entry in stages.items()},
        seconds=round(time.perf_counter() - started, 2),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def _brief_stage(entry: dict[str, Any]) -> dict[str, Any]:
    summary = entry.get("summary") or {}
    told = ("achieved_ratio", "affected", "candidates", "final_loss", "first_loss", "global_step", "examples")
    return {**{k: entry.get(k) for k in ("records_in", "records_out", "records_rejected", "seconds")},
            **{k: summary[k] for k in told if k in summary}}


def error_line(exc: BaseException) -> str:
    """The one line that says what went wrong: the task's own exception, not Ray's wrapper."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".strip()


def run_variants(
    plans: list[VariantPlan],
    *,
    resources: StageResources,
    max_concurrent: int,
) -> list[VariantOutcome]:
    """Run every plan that has not finished before, at most ``max_concurrent`` at a time, in plan order.

    Returns one outcome per plan (finished, cached or failed), in plan order.
    """
    import ray

    outcomes: dict[str, VariantOutcome] = {}
    todo = []
    for plan in plans:
        if plan.nothing_to_build:
            outcomes[plan.variant.name] = plan.failed(plan.nothing_to_build)
            _say(plan, f"[red]failed[/] {plan.nothing_to_build}")
        elif (earlier := plan.finished()) is not None:
            earlier.cached = True
            outcomes[plan.variant.name] = earlier
            _say(plan, f"finished earlier, skipped ({plan.directory})")
        else:
            todo.append(plan)
    remote = ray.remote(execute_variant)
    in_flight: dict[Any, tuple[VariantPlan, float]] = {}
    try:
        while todo or in_flight:
            while todo and len(in_flight) < max_concurrent:
                plan = todo.pop(0)
                Path(plan.directory).mkdir(parents=True, exist_ok=True)
                ref = remote.options(
                    **resources.ray_remote_args(), max_retries=0, name=f"sweep:{plan.variant.name}"
                ).remote(plan)
                in_flight[ref] = (plan, time.perf_counter())
                _say(plan, "started")
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            plan, started = in_flight.pop(ref)
            try:
                outcome = ray.get(ref)
                _say(plan, f"[green]finished[/] ({outcome.seconds:.0f}s)")
            except Exception as exc:  # a failed variant is reported; the others go on
                detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                outcome = plan.failed(error_line(exc), detail, time.perf_counter() - started)
                _say(plan, f"[red]failed[/] {outcome.error}")
            outcomes[plan.variant.name] = outcome
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        raise
    return [outcomes[p.variant.name] for p in plans]


def _say(plan: VariantPlan, text: str) -> None:
    console.print(f"[bold]sweep[/] {plan.variant.name}: {text}", soft_wrap=True)
