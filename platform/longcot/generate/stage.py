"""The ``generate`` stage: problems in, one trace record per sample out, resumable.

Contract:
- in: problem records (``longcot problems`` output, or any record file with ``problem`` text);
- out: ``n`` sample records per problem (ids stable: a hash of the problem id and the sample index),
  written in committed chunks of ``batch_size`` as they are generated; a request that fails after its
  retries is a record with ``finish_reason="error"`` and ``error`` set, not a lost row;
- rejected: malformed input lines, rows without problem text, repeated problems (same problem id);
- resume: ids already in the output are skipped; an output written with another model, prompt or
  sampling is detected by its fingerprint file and refused (or, per ``if_changed``, set aside).
The backend (hf, vllm, openai, recorded, llamacpp) is configuration: this module never branches on it. The
summary says where the time went, phase by phase (``PhaseClock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import Progress

from longcot.dataflow import run_row_stage
from longcot.errors import ConfigError, InputError, RejectRow
from longcot.generate.backend import Backend
from longcot.generate.backends import make_backend
from longcot.generate.config import GenerateConfig, GenerateLineage
from longcot.generate.samples import (
    STAGE,
    as_problem,
    claim_output,
    drop_error_records,
    expand_samples,
    fingerprint,
    messages_for,
    output_stats,
)
from longcot.recordfiles import existing_ids
from longcot.rundir import write_json
from longcot.stages import StageContext, StageResult

console = Console(stderr=True)


def run(config: GenerateConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Generate samples for the problems at ``input_path`` into the stage output (see module doc)."""
    if input_path is None:
        raise InputError("the generate stage needs problem records: add a problems stage or pass --input")
    if config.output and not ctx.output_override:  # a CLI --output wins over the config's fixed output
        ctx = dataclasses.replace(ctx, output_override=config.output)
    return generate_records(
        input_path, config, output_path=ctx.output_path(STAGE), rejected_path=ctx.rejected_path(STAGE),
        ctx_ray=ctx.ray, progress=ctx.progress,
        summary_path=ctx.run_dir.stage_dir(STAGE) / "summary.json", source=str(input_path),
    )


def generate_records(
    problems: list[dict] | str | Path,
    config: GenerateConfig,
    *,
    output_path: str | Path,
    rejected_path: str | Path,
    ctx_ray: Any = None,
    progress: bool | Progress = True,
    summary_path: str | Path | None = None,
    source: str = "problems",
    echo: bool = True,
) -> StageResult:
    """Generate ``config.sampling.n`` samples for each problem into ``output_path`` (resumable), on the shared
    runner (``dataflow.run_row_stage``) with the backend's map step.

    ``problems``: rows in memory (the API that eval and sweeps call) or a record file. Unreadable lines and
    rows that cannot be prompted go to ``rejected_path`` (written fresh). ``StageResult.output`` is where the
    samples are (a sibling of ``output_path`` when ``if_changed: new_output`` set them aside); ``records_out``
    counts every sample of these problems now in the output, ``summary`` holds this run's numbers (printed
    unless not ``echo``; ``progress`` is the live bar).
    """
    started = time.perf_counter()
    backend = make_backend(config)
    clock, generated = PhaseClock(started), []

    def prepare(rows: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
        prompted = prompt_samples(rows, config, backend, source)
        clock.mark("prepare")
        return prompted

    def check() -> None:
        clock.mark("ray_connect")
        backend.check()
        clock.mark("check")

    with _exclusive(output_path):
        output = claim_output(output_path, config, has_records=bool(existing_ids(output_path)))
        with _exclusive(output) if output != Path(output_path) else contextlib.nullcontext():
            retried = drop_error_records(output) if config.retry_errors else 0
            # one block per batch, so every batch is committed to the output as soon as it is generated
            result = run_row_stage(
                stage=STAGE, input_path=problems, output_path=output, rejected_path=rejected_path, prepare=prepare,
                map_step=backend.apply, check=check, observe=lambda blocks: clock.observe(blocks, generated),
                chunk_rows=config.batch_size, resume=True, progress=progress, ray_config=ctx_ray, unit="samples",
                label=f"{STAGE} ({source})" if source != "problems" else STAGE,
            )
    summary = summarize(generated, clock.run_seconds)
    present = result.records_out - len(generated)
    summary.update(
        phases=clock.phases,
        problems=result.records_in - result.records_rejected,
        skipped_existing=present,
        retried_errors=retried,
        output=str(output),
        fingerprint=fingerprint(config)["hash"],
        backend=backend.describe().model_dump(mode="json", exclude_unset=True),
    )
    if summary_path:
        write_json(summary_path, summary)
    if echo:
        print_summary(summary)
    result.summary, result.seconds = summary, time.perf_counter() - started
    result.headlines = [f"{summary['generated']} samples by {config.model} ({config.backend}): {summary['ok']} "
                        f"finished, {summary['truncated']} hit the length limit, {summary['error']} failed; "
                        f"{present} already present"]
    return result


def prompt_samples(rows: list[dict], config: GenerateConfig, backend: Backend,
                   source: str) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Problem rows -> (their ``config.sampling.n`` sample rows with the backend's ``prompt``, [(row, reason)]
    for rows without problem text, repeated problems and prompts the backend refuses)."""
    samples: list[dict] = []
    dropped: list[tuple[dict, str]] = []
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        where = f"{source} row {number}: "
        try:
            problem = as_problem(row, where)
            if problem["problem_id"] in seen:
                raise RejectRow(f"{where}repeats problem {problem['problem_id']}")
            seen.add(problem["problem_id"])
            prompt = backend.render(messages_for(problem, config))
        except (RejectRow, ValueError) as exc:
            dropped.append((row, getattr(exc, "reason", None) or f"{where}{exc}"))
            continue
        samples.extend({**s, "prompt": prompt} for s in expand_samples(problem, config.sampling.n))
    return samples, dropped


def _exclusive(output: str | Path) -> contextlib.AbstractContextManager:
    """A lock on ``output`` held for the run (``with``): two runs appending to one output would duplicate samples.
    The lock is released by the kernel however the process ends."""
    lock_path = Path(output).with_name(Path(output).name + ".lock")
    try:
        return FileLock(lock_path).acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{output}: another generate run is writing to it (lock {lock_path})") from None


class PhaseClock:
    """Where the stage's time went, in seconds per phase (the summary's ``phases``):

    - ``prepare``: reading the problems, rendering prompts, claiming the output;
    - ``ray_connect`` and ``check``: reaching Ray, and the backend's check that the cluster can run it;
    - ``actor_start``: from starting the dataset to the first block, less that block's own generation and its
      actor's model load: the actor's process starting (its imports), Ray Data scheduling the first block;
    - ``model_load``: the first block's actor building its engine (``engine_load_s`` in that block's lineage);
    - ``generating``: the engines' own time on the blocks (summed over blocks, so it exceeds the wall time
      when several actors generate at once);
    - ``commit``: the driver writing blocks to the output (the engines go on generating meanwhile);
    - ``other``: what is left of the run's wall time (moving blocks, waiting on the slowest actor).
    """

    def __init__(self, started: float):
        self.last = started
        self.phases: dict[str, float] = {}
        self.run_seconds = 0.0  # from building the dataset to the last block written

    def mark(self, phase: str) -> None:
        """``phase`` ends now (it began where the previous one ended)."""
        now = time.perf_counter()
        self.phases[phase] = round(now - self.last, 3)
        self.last = now

    def observe(self, batches: Iterable[pa.Table], seen: list[dict]) -> Iterator[pa.Table]:
        """Pass blocks through, timing them and keeping the few fields the summary needs; the run's phases are
        set once the last block has passed."""
        run_started = self.last  # the dataset is built and mapped after the last mark (``check``)
        startup = model_load = generating = commit = 0.0
        for number, table in enumerate(batches):
            arrived = time.perf_counter()
            fields = table.select(["finish_reason", "output_tokens", "prompt_tokens", "reject_reason"]).to_pylist()
            seen.extend(row for row in fields if not row["reject_reason"])  # a rejected batch was not generated
            block_seconds, load = _block_seconds(table)
            if number == 0:
                startup, model_load = max(0.0, arrived - run_started - block_seconds), load
            generating += block_seconds
            yield table
            commit += time.perf_counter() - arrived
        self.run_seconds = run_seconds = time.perf_counter() - run_started
        self.phases.update(actor_start=round(max(0.0, startup - model_load), 3), model_load=round(model_load, 3),
                           generating=round(generating, 3), commit=round(commit, 3),
                           other=round(max(0.0, run_seconds - startup - generating - commit), 3))


def _block_seconds(table: pa.Table) -> tuple[float, float]:
    """An engine's time on one block: the longest of its records' generation times (lineage ``seconds``;
    every record of a batch shares its batch's time, or, where sequences start and end apart, the longest
    spans the block); and its actor's model load when this was the actor's first block (else 0)."""
    from longcot.records import lineage_detail

    details = [lineage_detail(row, GenerateLineage) for row in table.select(["lineage"]).to_pylist()]
    details = [d for d in details if d is not None]
    seconds = max((d.seconds for d in details if d.seconds is not None), default=0.0)
    return seconds, max((d.engine_load_s or 0.0 for d in details), default=0.0)


def summarize(rows: list[dict], seconds: float) -> dict[str, Any]:
    """This run's numbers: ok/truncated/error counts, throughput, output length (mean, p50, p90)."""
    lengths = [int(r["output_tokens"] or 0) for r in rows if r.get("finish_reason") != "error"]
    out_tokens = sum(lengths)
    return {
        "generated": len(rows),
        **output_stats(rows),
        "seconds": round(seconds, 3),
        "prompts_per_s": round(len(rows) / seconds, 4) if seconds else None,
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / seconds, 3) if seconds else None,
        "output_len_mean": round(statistics.fmean(lengths), 2) if lengths else None,
        "output_len_p50": float(np.percentile(lengths, 50)) if lengths else None,
        "output_len_p90": float(np.percentile(lengths, 90)) if lengths else None,
    }


def print_summary(summary: dict[str, Any]) -> None:
    rate = summary["prompts_per_s"]
    phases = ", ".join(f"{k} {v:.1f}" for k, v in (summary.get("phases") or {}).items())
    console.print(
        f"[bold]generate[/]: {summary['generated']} generated ({summary['ok']} ok, {summary['truncated']} truncated, "
        f"{summary['error']} error), {summary['skipped_existing']} already present; "
        + (f"{rate:.3g} prompts/s, {summary['output_tokens_per_s']:.4g} output tokens/s; "
           f"output tokens mean {summary['output_len_mean']} p50 {summary['output_len_p50']} "
           f"p90 {summary['output_len_p90']}; seconds {phases}" if rate else "nothing to generate"),
        highlight=False,
    )
