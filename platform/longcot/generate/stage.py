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
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
from rich.console import Console

from longcot.cluster import connect
from longcot.dataflow import drain, read_input, rows_to_dataset
from longcot.errors import ConfigError, InputError, RejectRow
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
from longcot.recordfiles import RecordWriter, RejectedWriter, existing_ids
from longcot.stages import StageContext, StageResult

console = Console(stderr=True)


def run(config: GenerateConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Generate samples for the problems at ``input_path`` into the stage output (see module doc)."""
    if input_path is None:
        raise InputError("the generate stage needs problem records: add a problems stage or pass --input")
    if ctx.output_override:
        output, rejected_path = Path(ctx.output_override), ctx.rejected_path(STAGE)
    elif config.output:
        output = Path(config.output)
        rejected_path = output.with_name(output.stem + ".rejected.jsonl") if output.suffix else output / "rejected.jsonl"
    else:
        output, rejected_path = ctx.output_path(STAGE), ctx.rejected_path(STAGE)
    Path(rejected_path).unlink(missing_ok=True)
    with RejectedWriter(rejected_path) as rejected:
        rows = read_input(input_path, STAGE, rejected)
        bad_lines = rejected.count
    result = generate_records(
        rows, config, output_path=output, rejected_path=rejected_path, ctx_ray=ctx.ray, progress=ctx.progress,
        summary_path=ctx.run_dir.stage_dir(STAGE) / "summary.json", source=str(input_path),
    )
    result.records_in += bad_lines
    result.records_rejected += bad_lines
    return result


def generate_records(
    problem_rows: list[dict],
    config: GenerateConfig,
    *,
    output_path: str | Path,
    rejected_path: str | Path,
    ctx_ray: Any = None,
    progress: bool = True,
    summary_path: str | Path | None = None,
    source: str = "problems",
    echo: bool = True,
) -> StageResult:
    """Generate ``config.sampling.n`` samples for each problem row into ``output_path`` (resumable).

    The API that eval and sweeps call with rows in memory. Rows that cannot be prompted go to
    ``rejected_path`` (appended). ``StageResult.output`` is where the samples are (a sibling of
    ``output_path`` when ``if_changed: new_output`` set them aside); ``records_out`` counts every sample
    of these problems now in the output, ``summary`` holds this run's numbers (printed unless not ``echo``;
    ``progress`` is the live bar).
    """
    started = time.perf_counter()
    backend = make_backend(config)
    with _exclusive(output_path):
        output = claim_output(output_path, config, has_records=bool(existing_ids(output_path)))
        with _exclusive(output) if output != Path(output_path) else contextlib.nullcontext():
            retried = drop_error_records(output) if config.retry_errors else 0
            return _generate(problem_rows, config, backend, output, rejected_path, ctx_ray=ctx_ray,
                             progress=progress, summary_path=summary_path, source=source, echo=echo,
                             started=started, retried=retried)


@contextlib.contextmanager
def _exclusive(output: str | Path):
    """Hold a lock on ``output`` for the run: two runs appending to one output would duplicate samples.
    The lock is released by the kernel however the process ends."""
    import fcntl

    lock_path = Path(output).with_name(Path(output).name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{output}: another generate run is writing to it (lock {lock_path})") from None
        yield


def _generate(problem_rows, config, backend, output, rejected_path, *, ctx_ray, progress, summary_path, source,
              echo, started, retried) -> StageResult:
    done = existing_ids(output)
    todo: list[dict] = []
    n_rejected = n_present = 0
    seen: set[str] = set()
    with RejectedWriter(rejected_path) as rejected:
        for number, row in enumerate(problem_rows, start=1):
            where = f"{source} row {number}: "
            try:
                problem = as_problem(row, where)
                if problem["problem_id"] in seen:
                    raise RejectRow(f"{where}repeats problem {problem['problem_id']}")
                seen.add(problem["problem_id"])
                prompt = backend.render(messages_for(problem, config))
            except (RejectRow, ValueError) as exc:
                rejected.reject(STAGE, getattr(exc, "reason", None) or f"{where}{exc}", row)
                n_rejected += 1
                continue
            samples = expand_samples(problem, config.sampling.n)
            fresh = [s for s in samples if s["id"] not in done]
            n_present += len(samples) - len(fresh)
            todo.extend({**s, "prompt": prompt} for s in fresh)

    generated: list[dict] = []
    gen_seconds = 0.0
    clock = PhaseClock(started)
    clock.mark("prepare")
    if todo:
        connect(ctx_ray)
        clock.mark("ray_connect")
        backend.check()
        clock.mark("check")
        gen_started = time.perf_counter()
        # One block per batch, so every batch is committed to the output as soon as it is generated.
        ds = backend.apply(rows_to_dataset(todo, chunk_rows=config.batch_size))
        with _ray_progress_off(), RecordWriter(output, append=True) as writer, \
                RejectedWriter(rejected_path) as rejected:
            drain(
                clock.observe(ds.iter_batches(batch_format="pyarrow", batch_size=None), generated),
                stage=STAGE, output=writer, rejected=rejected, total=len(todo), progress=progress, unit="samples",
            )
        gen_seconds = time.perf_counter() - gen_started
        clock.close_run(gen_seconds)
    summary = summarize(generated, gen_seconds)
    summary.update(
        phases=clock.phases,
        problems=len(problem_rows) - n_rejected,
        skipped_existing=n_present,
        retried_errors=retried,
        output=str(output),
        fingerprint=fingerprint(config)["hash"],
        backend=backend.describe().model_dump(mode="json", exclude_unset=True),
    )
    if summary_path:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(_json(summary))
    if echo:
        print_summary(summary)
    result = StageResult(
        stage=STAGE,
        records_in=len(problem_rows),
        records_out=n_present + len(generated),
        records_rejected=n_rejected,
        output=str(output),
        summary=summary,
        seconds=time.perf_counter() - started,
        fan_out=True,
        headlines=[f"{summary['generated']} samples by {config.model} ({config.backend}): {summary['ok']} finished, "
                   f"{summary['truncated']} hit the length limit, {summary['error']} failed; "
                   f"{n_present} already present"],
    )
    missing = len(todo) - len(generated)
    if missing:
        raise RuntimeError(f"generate lost {missing} of {len(todo)} samples between the backend and {output}")
    return result


@contextlib.contextmanager
def _ray_progress_off():
    """Ray Data's own progress output off while ours (``drain``) shows the samples."""
    import ray.data

    data_ctx = ray.data.DataContext.get_current()
    before = data_ctx.enable_progress_bars
    data_ctx.enable_progress_bars = False
    try:
        yield
    finally:
        data_ctx.enable_progress_bars = before


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
        self._generating = self._commit = 0.0
        self._first_block: float | None = None
        self._model_load = 0.0
        self._run_started: float | None = None

    def mark(self, phase: str) -> None:
        """``phase`` ends now (it began where the previous one ended)."""
        now = time.perf_counter()
        self.phases[phase] = round(now - self.last, 3)
        self.last = now

    def observe(self, batches: Iterable[pa.Table], seen: list[dict]) -> Iterator[pa.Table]:
        """Pass blocks through, timing them and keeping the few fields the summary needs."""
        self._run_started = time.perf_counter()
        for table in batches:
            arrived = time.perf_counter()
            seen.extend(table.select(["finish_reason", "output_tokens", "prompt_tokens"]).to_pylist())
            block_seconds, model_load = _block_seconds(table)
            if self._first_block is None:
                self._model_load = model_load
                self._first_block = max(0.0, arrived - self._run_started - block_seconds)
            self._generating += block_seconds
            yield table
            self._commit += time.perf_counter() - arrived

    def close_run(self, run_seconds: float) -> None:
        startup = self._first_block or 0.0
        self.phases.update(actor_start=round(max(0.0, startup - self._model_load), 3),
                           model_load=round(self._model_load, 3), generating=round(self._generating, 3),
                           commit=round(self._commit, 3),
                           other=round(max(0.0, run_seconds - startup - self._generating - self._commit), 3))


def _block_seconds(table: pa.Table) -> tuple[float, float]:
    """An engine's time on one block: the longest of its records' generation times (lineage ``seconds``;
    every record of a batch shares its batch's time, or, where sequences start and end apart, the longest
    spans the block); and its actor's model load when this was the actor's first block (else 0)."""
    from longcot.records import lineage_detail

    details = [lineage_detail(row, GenerateLineage) for row in table.select(["lineage"]).to_pylist()]
    details = [d for d in details if d is not None]
    seconds = max((d.seconds for d in details if d.seconds is not None), default=0.0)
    return seconds, max((d.engine_load_s or 0.0 for d in details), default=0.0)


def _percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo))


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
        "output_len_p50": _percentile(lengths, 0.5),
        "output_len_p90": _percentile(lengths, 0.9),
    }


def print_summary(summary: dict[str, Any]) -> None:
    rate = summary["prompts_per_s"]
    phases = summary.get("phases") or {}
    console.print(
        f"[bold]generate[/]: {summary['generated']} generated ({summary['ok']} ok, {summary['truncated']} truncated, "
        f"{summary['error']} error), {summary['skipped_existing']} already present; "
        + (f"{rate:.3g} prompts/s, {summary['output_tokens_per_s']:.4g} output tokens/s; "
           f"output tokens mean {summary['output_len_mean']} p50 {summary['output_len_p50']} "
           f"p90 {summary['output_len_p90']}" if rate else "nothing to generate")
        + ("; seconds " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()) if rate else ""),
        highlight=False,
    )


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
