"""Ray Data wiring shared by the record stages: records in, a row or batch function mapped, records out.

Stage logic stays a plain function on rows (``dict -> dict``) or batches (``list[dict] -> list[dict]``)
that tests call directly. ``run_row_stage`` is the one place that turns such a function into a Ray Data
``map_batches`` over Arrow blocks (on tasks, or on an actor pool that builds heavy state once per actor),
streams the results back, optionally hands them to a driver-side finalize hook (e.g. curation over every
row), and writes them in committed chunks: processed rows to the output (fresh, or resumed by id), rows
whose function raised ``RejectRow`` (or any error) to the rejected file with the reason. Nothing is lost:
records in == records out + rejected. Generate brings its backend's ``map_step`` instead of a row function.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import pyarrow as pa

from longcot import records
from longcot.errors import InputError, RejectRow
from longcot.recordfiles import BadLine, RecordWriter, RejectedWriter, existing_ids, read_records
from longcot.settings import StageResources

if TYPE_CHECKING:
    from rich.progress import Progress

RowFn = Callable[[dict], dict]
BatchFn = Callable[[list[dict]], list[dict]]
# a driver-side hook on every row at once -> (rows to go on with, [(row, reason) to reject]): prepare, finalize
Split = Callable[[list[dict]], tuple[list[dict], list[tuple[dict, str]]]]
Reader = Callable[[str | Path], Iterable[dict | BadLine]]
MapStep = Callable[[Any], Any]  # Ray Dataset of rows -> Ray Dataset of processed rows, one out per row in
Observe = Callable[[Iterator[pa.Table]], Iterator[pa.Table]]  # passes the result blocks through, watching them
CHUNK_ROWS = 256
T = TypeVar("T")


def read_input(path: str | Path, stage: str, rejected: RejectedWriter, reader: Reader = read_records) -> list[dict]:
    """All records of ``path`` as ``reader`` reads them (default: any trace file, ``recordfiles.read_records``);
    lines and rows that cannot be read go straight to ``rejected`` (naming file and line). An input with
    nothing in it is an ``InputError``: a stage that quietly processes nothing hides a wrong path or an
    empty export."""
    before = rejected.count
    rows = list(rejected.readable(reader(path), stage))
    if not rows and rejected.count == before:
        raise InputError("holds no records (the input is empty)", str(path))
    return rows


def rows_to_dataset(rows: list[dict], chunk_rows: int = CHUNK_ROWS):
    """A Ray Dataset of full records, in blocks of ``chunk_rows`` (so work spreads over the cluster)."""
    import ray.data

    tables = [records.to_table(rows[i : i + chunk_rows]) for i in range(0, len(rows), chunk_rows)]
    return ray.data.from_arrow(tables or [records.to_table([])])


def _error_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()


def apply_row_fn(fn: RowFn, stage: str, row: dict) -> dict:
    """``fn(row)``, with a failure recorded in ``reject_reason`` instead of raised (never loses the row)."""
    try:
        return fn(row)
    except RejectRow as exc:
        return {**row, "reject_reason": f"{stage}: {exc.reason}"}
    except Exception as exc:  # a bug or bad data in one row must not stop the job
        return {**row, "reject_reason": f"{stage}: {_error_line(exc)}"}


class StageFn:
    """Adapter for ``map_batches(batch_format="pyarrow")``: the stage's function over every row of a block.

    ``batch``: ``fn`` takes and returns a list of rows (it may return more than it got: fan-out); if it
    raises, every row of the batch is kept with the error as its reject reason. Otherwise ``fn`` is a row
    function and a failing row is kept with its own reason. ``build``: ``fn`` is a factory called once here
    (once per actor in an actor pool) to make the function, so heavy state is built once, not per block.
    """

    def __init__(self, fn: Callable, stage: str, batch: bool = False, build: bool = False):
        self.fn = fn() if build else fn
        self.stage = stage
        self.batch = batch

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = records.from_table(table)
        try:  # a row function never raises (apply_row_fn keeps each failure with its row)
            out = self.fn(rows) if self.batch else [apply_row_fn(self.fn, self.stage, r) for r in rows]
        except Exception as exc:
            out = [{**r, "reject_reason": f"{self.stage}: {_error_line(exc)}"} for r in rows]
        return records.to_table(out)


def drain(
    batches: Iterable[pa.Table],
    *,
    stage: str,
    output: RecordWriter,
    rejected: RejectedWriter,
    total: int | None = None,
    progress: bool | Progress = True,
    unit: str = "records",
    label: str | None = None,
) -> int:
    """Write streamed result blocks: rows with ``reject_reason`` to ``rejected``, the rest to ``output``; returns
    how many rows came. ``progress``: a live bar of its own, none (False), or a bar added to a display that
    runs going on at once share (``shared_progress``); ``label`` names the bar (default: the stage)."""
    seen = 0
    with _progress_bar(progress, label or stage, total, unit) as advance:
        for table in batches:
            rows = records.from_table(table)
            for row in rows:
                if row.get("reject_reason"):
                    rejected.reject(stage, row["reject_reason"], {**row, "reject_reason": None})
            output.write([row for row in rows if not row.get("reject_reason")])
            advance(len(rows))
            seen += len(rows)
    return seen


def _progress_columns(unit: str) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
            TimeElapsedColumn()]


@contextlib.contextmanager
def _progress_bar(progress: bool | Progress, label: str, total: int | None, unit: str):
    """``advance(n)`` of one bar: on ``progress`` when it is a shared display, else on a display of its own."""
    from rich.progress import Progress

    shared = isinstance(progress, Progress)
    display = progress if shared else Progress(*_progress_columns(unit), disable=not progress, transient=False)
    with contextlib.nullcontext(display) if shared else display:
        task = display.add_task(label, total=total)
        yield lambda n: display.update(task, advance=n)


@contextlib.contextmanager
def shared_progress(enabled: bool, unit: str = "records"):
    """One live display for stage runs that go on at once, each adding its own bar to it (a console renders one
    live display at a time; rich prints a second one only when it stops): pass it as their ``progress``. Yields
    False when ``enabled`` is False."""
    from rich.progress import Progress

    if not enabled:
        yield False
        return
    with Progress(*_progress_columns(unit), transient=False) as display:
        yield display


def run_concurrently(calls: list[Callable[[], T]], at_most: int | None = None) -> list[T]:
    """Each call on a thread of its own, at most ``at_most`` at a time (None: all at once), started in order; their
    results in order once every one has ended. The first error in order is raised then. The threads are daemons,
    so Ctrl-C ends the process without waiting for them. Stage runs started this way share the cluster: Ray
    places each one's workers as resources allow."""
    slots = threading.BoundedSemaphore(at_most or max(1, len(calls)))
    futures: list[Future] = []
    for call in calls:
        future: Future = Future()

        def target(call=call, future=future) -> None:
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller, which raises it
                future.set_exception(exc)
            finally:
                slots.release()

        slots.acquire()  # here, not in the thread: the calls start in order
        threading.Thread(target=target, daemon=True, name="longcot-concurrent").start()
        futures.append(future)
    wait(futures)
    return [f.result() for f in futures]


class _Collected(list):
    """Processed rows held in memory instead of written (``drain``'s output): for a finalize hook, and as the output
    of a run given none."""

    path = None
    write = write_stream = list.extend
    count = property(len)  # rows written, as a writer counts them (list.count is not used here)


def _opened(target, writer: type, **options):
    """A new ``writer`` on the path ``target`` (closed when done), ``target`` itself if it is an open one, or rows
    held in memory (``_Collected``) when it is None."""
    if target is None:
        return contextlib.nullcontext(_Collected())
    return contextlib.nullcontext(target) if isinstance(target, writer) else writer(target, **options)


def run_row_stage(
    fn: RowFn | BatchFn | Callable[[], RowFn | BatchFn] | None = None,
    *,
    stage: str,
    input_path: str | Path | list[dict],
    output_path: str | Path | RecordWriter | None,
    rejected_path: str | Path | RejectedWriter,
    reader: Reader = read_records,
    batch: bool = False,
    batch_size: int | None = 64,
    chunk_rows: int = CHUNK_ROWS,
    actors: int | None = None,
    tasks: int | None = None,
    resources: StageResources | None = None,
    prepare: Split | None = None,
    map_step: MapStep | None = None,
    check: Callable[[], None] | None = None,
    observe: Observe | None = None,
    finalize: Split | None = None,
    resume: bool = False,
    ordered: bool = False,
    progress: bool | Progress = True,
    ray_config: Any = None,
    unit: str = "records",
    label: str | None = None,
):
    """The one runner of the record stages: map ``fn`` over a record file with Ray Data; returns a ``StageResult``.

    - in: every record of ``input_path`` (as ``reader`` reads it; or the rows themselves, when it is a list);
      lines that cannot be read go to ``rejected_path`` naming file and line.
    - prepare (optional, on the driver): every row read -> ``(rows to map, [(row, reason), ...])``; it may fan
      out (generate: a row per sample; the result is then ``fan_out``). Dropped rows are rejected as given.
    - map: ``fn`` on rows (or on batches, ``batch=True``) in blocks of ``chunk_rows``, ``batch_size`` rows per
      call (None: one call per block). Compute: Ray tasks (at most ``tasks`` at once), or with ``actors=N`` a
      pool of N actors, where ``fn`` is a picklable zero-argument factory (e.g. ``partial(SomeClass, cfg)``)
      that each actor calls once to build its function. ``resources``: what each task or actor asks for,
      checked against the cluster first (``ResourceError`` if no node can ever run one). Or ``map_step`` maps
      the Dataset, one row out per row in. Ray is reached (then ``check`` called) only if there is work.
    - observe (optional): wraps the stream of result blocks (e.g. timing them) before they are written.
    - finalize (optional, on the driver): gets every row processed without error, at once, and returns
      ``(kept, [(row, reason), ...])``; nothing is written before it returns. Dropped rows are rejected as
      ``"<stage>: <reason>"``.
    - out: processed (or kept) rows to ``output_path``; rows whose function raised to ``rejected_path`` with
      the reason (no ``output_path``: the processed rows reach only ``finalize``, and the result's ``output`` is
      None). The output is written fresh, or with ``resume`` appended to, skipping rows to map whose id
      is already in it (they count as out). The rejected file is always written fresh. Either may be an open
      writer instead (a stage that maps several times into one file: eval, once per variant): it is appended
      to and left open, and only what this run wrote counts. ``ordered``: rows come out in input order (Ray
      Data otherwise yields blocks as they finish).
    Nothing is lost: records in == out + rejected, checked (``StageResult.check_counts``); and as many rows
    come back from the map as went in, unless a batch function (it may fan out) maps them (``RuntimeError``).
    ``progress``, ``label``: the live bar, as ``drain`` takes them.
    """
    import ray.data

    from longcot.cluster import connect, require_resources
    from longcot.stages import StageResult

    started = time.perf_counter()
    done = existing_ids(output_path) if resume else set()
    nodes: list[str] = []
    with _opened(rejected_path, RejectedWriter) as rejected:
        rejected_before = rejected.count
        rows = input_path if isinstance(input_path, list) else read_input(input_path, stage, rejected, reader)
        n_in = len(rows) + rejected.count - rejected_before
        if prepare:
            rows, dropped = prepare(rows)
            for row, reason in dropped:
                rejected.reject(stage, reason, row)
        todo = [r for r in rows if r["id"] not in done]
        ds = None
        if todo:  # Ray only when there is something to map
            connect(ray_config)
            if resources is not None:
                require_resources(resources, stage)
            if check:
                check()
            ds = rows_to_dataset(todo, chunk_rows)
            if map_step:
                ds = map_step(ds)
            else:
                build = {"fn": fn, "stage": stage, "batch": batch, "build": True}
                if actors:
                    adapter, options = StageFn, {"fn_constructor_kwargs": build,
                                                 "compute": ray.data.ActorPoolStrategy(size=actors)}
                else:
                    adapter, options = StageFn(fn, stage, batch), {"compute": ray.data.TaskPoolStrategy(size=tasks)}
                ds = ds.map_batches(adapter, batch_format="pyarrow", batch_size=batch_size, **options,
                                    **(resources.ray_remote_args() if resources else {}))
            ds.context.enable_progress_bars = False  # this Dataset's own bars: drain's bar shows the rows
            if ordered:
                ds.context.execution_options.preserve_order = True
        with _opened(output_path, RecordWriter, append=resume) as output:
            written_before = output.count
            sink = _Collected() if finalize else output
            if ds is not None:
                blocks = ds.iter_batches(batch_format="pyarrow", batch_size=None)
                came = drain(observe(blocks) if observe else blocks, stage=stage, output=sink, rejected=rejected,
                             total=len(todo), progress=progress, unit=unit, label=label)
                if came != len(todo) and not batch:
                    raise RuntimeError(f"{stage} lost {len(todo) - came} of {len(todo)} rows between its map and "
                                       f"{output.path}")
                nodes = nodes_of(ds)
            if finalize:
                kept, dropped = finalize(sink)
                output.write_stream(kept)
                for row, reason in dropped:
                    rejected.reject(stage, f"{stage}: {reason}", row)
            n_out = output.count - written_before + len(rows) - len(todo)
        n_rej = rejected.count - rejected_before
    result = StageResult(stage, n_in, n_out, n_rej, output=output.path and str(output.path),
                         seconds=time.perf_counter() - started, nodes=nodes, fan_out=prepare is not None)
    result.check_counts()
    return result


def nodes_of(ds) -> list[str]:
    """Ids of the Ray nodes whose workers produced ``ds``'s output blocks (after it has been consumed).

    Read from Ray Data's own per-block execution stats (``BlockExecStats.node_id``), so it works for any
    ``map_batches`` (tasks or actor pools) without the stage's function taking part. Empty if unknown.
    """
    try:
        per_operator = ds._raw_stats().metadata  # Ray keeps no public per-node view; pinned by test_cluster_multinode
    except Exception:
        return []
    stats = (getattr(block, "exec_stats", None) for blocks in per_operator.values() for block in blocks)
    return sorted({s.node_id for s in stats if s is not None and s.node_id})
