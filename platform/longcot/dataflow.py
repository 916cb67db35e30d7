"""Ray Data wiring shared by the record stages: records in, a row or batch function mapped, records out.

Stage logic stays a plain function on rows (``dict -> dict``) or batches (``list[dict] -> list[dict]``)
that tests call directly. This module is the one place that turns such a function into a Ray Data
``map_batches`` over Arrow blocks, streams the results back, and writes them in committed chunks:
processed rows to the output, rows whose function raised ``RejectRow`` (or any error) to the rejected
file with the reason. Nothing is lost: records in == records out + rejected.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa

from longcot import records
from longcot.errors import RejectRow
from longcot.recordfiles import BadLine, RecordWriter, RejectedWriter, bad_line_record, read_records

RowFn = Callable[[dict], dict]
BatchFn = Callable[[list[dict]], list[dict]]
CHUNK_ROWS = 256


def read_input(path: str | Path, stage: str, rejected: RejectedWriter) -> list[dict]:
    """All records of ``path`` (any trace file: ``recordfiles.read_records``); lines and rows that cannot be
    read go straight to ``rejected`` (naming file and line). An input with nothing in it is an ``InputError``:
    a stage that quietly processes nothing hides a wrong path or an empty export."""
    from longcot.errors import InputError

    rows, bad = [], 0
    for item in read_records(path):
        if isinstance(item, BadLine):
            rejected.write_entry(bad_line_record(item, stage))
            bad += 1
        else:
            rows.append(item)
    if not rows and not bad:
        raise InputError("holds no records (the input is empty)", str(path))
    return rows


def rows_to_dataset(rows: list[dict], chunk_rows: int = CHUNK_ROWS):
    """A Ray Dataset of full records, in blocks of ``chunk_rows`` (so work spreads over the cluster)."""
    import ray.data

    tables = [records.to_table(rows[i : i + chunk_rows]) for i in range(0, len(rows), chunk_rows)]
    if not tables:
        tables = [records.to_table([])]
    return ray.data.from_arrow(tables)


def apply_row_fn(fn: RowFn, stage: str, row: dict) -> dict:
    """``fn(row)``, with a failure recorded in ``reject_reason`` instead of raised (never loses the row)."""
    try:
        out = fn(row)
    except RejectRow as exc:
        return {**row, "reject_reason": f"{stage}: {exc.reason}"}
    except Exception as exc:  # a bug or bad data in one row must not stop the job
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {**row, "reject_reason": f"{stage}: {last}"}
    return out


class RowStage:
    """Adapter for ``map_batches(batch_format="pyarrow")``: applies a row function to every row of a block."""

    def __init__(self, fn: RowFn, stage: str):
        self.fn = fn
        self.stage = stage

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = records.from_table(table)
        return records.to_table([apply_row_fn(self.fn, self.stage, r) for r in rows])


class BatchStage:
    """Adapter for ``map_batches(batch_format="pyarrow")`` around a batch function (``list -> list``).

    The function may return more rows than it got (fan-out). If it raises, every row of the batch is
    kept with the error as its reject reason.
    """

    def __init__(self, fn: BatchFn, stage: str):
        self.fn = fn
        self.stage = stage

    def __call__(self, table: pa.Table) -> pa.Table:
        rows = records.from_table(table)
        try:
            out = self.fn(rows)
        except Exception as exc:
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            out = [{**r, "reject_reason": f"{self.stage}: {last}"} for r in rows]
        return records.to_table(out)


def drain(
    batches: Iterable[pa.Table],
    *,
    stage: str,
    output: RecordWriter,
    rejected: RejectedWriter,
    total: int | None = None,
    progress: bool = True,
    unit: str = "records",
) -> tuple[int, int]:
    """Write streamed result blocks: rows with ``reject_reason`` to ``rejected``, the rest to ``output``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    n_out = n_rej = 0
    columns = [TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(stage, total=total)
        for table in batches:
            rows = records.from_table(table)
            good = []
            for row in rows:
                if row.get("reject_reason"):
                    reason = row["reject_reason"]
                    rejected.reject(stage, reason, {**row, "reject_reason": None})
                    n_rej += 1
                else:
                    good.append(row)
            output.write(good)
            n_out += len(good)
            bar.update(task, advance=len(rows))
    return n_out, n_rej


def run_row_stage(
    fn: RowFn | BatchFn,
    *,
    stage: str,
    input_path: str | Path,
    output_path: str | Path,
    rejected_path: str | Path,
    batch: bool = False,
    batch_size: int = 64,
    remote_args: dict[str, Any] | None = None,
    progress: bool = True,
    ray_config: Any = None,
):
    """Map a pure row (or batch) function over a record file with Ray Data; returns a ``StageResult``.

    Output is written fresh (a CPU stage is cheap to redo); see ``generate`` for resumable output.
    """
    from longcot.cluster import connect
    from longcot.stages import StageResult

    started = time.perf_counter()
    connect(ray_config)
    Path(rejected_path).unlink(missing_ok=True)
    with RejectedWriter(rejected_path) as rejected, RecordWriter(output_path, append=False) as output:
        rows = read_input(input_path, stage, rejected)
        n_in = len(rows) + rejected.count
        ds = rows_to_dataset(rows)
        adapter = BatchStage(fn, stage) if batch else RowStage(fn, stage)
        ds = ds.map_batches(adapter, batch_format="pyarrow", batch_size=batch_size, **(remote_args or {}))
        n_out, n_rej = drain(
            ds.iter_batches(batch_format="pyarrow", batch_size=None),
            stage=stage,
            output=output,
            rejected=rejected,
            total=len(rows),
            progress=progress,
        )
        n_rej = rejected.count
    result = StageResult(
        stage=stage,
        records_in=n_in,
        records_out=n_out,
        records_rejected=n_rej,
        output=str(output_path),
        seconds=time.perf_counter() - started,
        nodes=nodes_of(ds),
    )
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
    found = {
        block.exec_stats.node_id
        for blocks in per_operator.values()
        for block in blocks
        if getattr(block, "exec_stats", None) is not None and block.exec_stats.node_id
    }
    return sorted(found)
