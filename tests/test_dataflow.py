"""The one stage runner (``dataflow.run_row_stage``) on a local Ray: an actor pool builds its state once per
actor, the finalize hook sees every processed row before anything is written, a resumed output skips the
ids already in it, a stage with its own map step (generate) prepares its rows on the driver and cannot lose
one unnoticed; in every case records in == out + rejected, each rejection with its reason."""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial

import pytest
from ray import cloudpickle

from longcot.dataflow import run_row_stage
from longcot.errors import RejectRow
from longcot.recordfiles import RecordWriter, RejectedWriter, load_records, write_records
from longcot.records import for_sample, json_field, new_problem

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module


def _rows(count: int) -> list[dict]:
    return [{**for_sample(new_problem(f"What is {i} + {i}?", source="file:sums.jsonl"), 0), "response": str(2 * i)}
            for i in range(count)]


def _tagged(row: dict, **tags) -> dict:
    return {**row, "metadata": json.dumps({**(json_field(row, "metadata") or {}), **tags}, sort_keys=True)}


def _tags(row: dict) -> dict:
    return json_field(row, "metadata") or {}


def _rejected(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Tagger:
    """A batch function with state: built once per actor, it tags each row with its process and build count."""

    built = 0  # Taggers built in this process

    def __init__(self, label: str):
        Tagger.built += 1
        self.label, self.builds = label, Tagger.built

    def __call__(self, rows: list[dict]) -> list[dict]:
        return [_tagged(r, label=self.label, pid=os.getpid(), builds=self.builds) for r in rows]


def test_an_actor_pool_builds_the_function_once_per_actor_and_maps_every_row(ray_local, tmp_path):
    source, output, rejected = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl"
    rows = _rows(40)
    write_records(source, rows)

    result = run_row_stage(partial(Tagger, "pool"), stage="toy", input_path=source, output_path=output,
                           rejected_path=rejected, batch=True, batch_size=None, chunk_rows=5, actors=2,
                           progress=False)

    out = load_records(output)
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)
    tags = [_tags(r) for r in out]
    assert {t["label"] for t in tags} == {"pool"}
    assert len({t["pid"] for t in tags}) <= 2  # the pool's actors, no more
    assert {t["builds"] for t in tags} == {1}  # 8 blocks, yet each actor built its Tagger once
    assert (result.records_in, result.records_out, result.records_rejected) == (40, 40, 0)
    assert result.nodes  # where the actors ran is known


def _answer_or_reject(row: dict) -> dict:
    if row["response"] == "6":
        raise RejectRow("three is unlucky")
    return _tagged(row, checked=True)


def test_finalize_sees_every_processed_row_before_anything_is_written(ray_local, tmp_path):
    source, output, rejected = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl"
    rows = _rows(12)
    write_records(source, rows)
    with source.open("a") as handle:
        handle.write("{not json\n")
    seen: list[dict] = []

    def keep_small(done: list[dict]):
        assert not load_records(output)  # nothing written before the hook returns
        seen.extend(done)
        small = [r for r in done if int(r["response"]) < 10]
        return small, [(r, "too large") for r in done if int(r["response"]) >= 10]

    result = run_row_stage(_answer_or_reject, stage="toy", input_path=source, output_path=output,
                           rejected_path=rejected, batch_size=4, finalize=keep_small, progress=False)

    assert len(seen) == 11 and all(_tags(r)["checked"] for r in seen)  # all but the row that raised
    assert sorted(int(r["response"]) for r in load_records(output)) == [0, 2, 4, 8]
    reasons = sorted(entry["reason"] for entry in _rejected(rejected))
    assert reasons == sorted([f"{source}:13: malformed JSON: Expecting property name enclosed in double quotes "
                              "(column 2)", "toy: three is unlucky"] + ["toy: too large"] * 7)
    assert (result.records_in, result.records_out, result.records_rejected) == (13, 4, 9)


def _first_waits_for_last(signal, row: dict) -> dict:
    """The block of the first row ("0") ends after the block of the last ("10") has: out of order, unless kept."""
    if row["response"] == "10":
        signal.touch()
    deadline = time.monotonic() + 30
    while row["response"] == "0" and not signal.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _answer_or_reject(row)


def test_open_writers_take_several_runs_in_input_order(ray_local, tmp_path):
    output, rejected = tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl"
    rows = _rows(12)
    with RecordWriter(output, append=False) as out, RejectedWriter(rejected) as rej:
        rej.reject("toy", "rejected before the map", {"id": "earlier"})
        results = [run_row_stage(partial(_first_waits_for_last, tmp_path / "last-done"), stage="toy",
                                 input_path=part, output_path=out, rejected_path=rej, batch_size=1, chunk_rows=1,
                                 tasks=2, ordered=True, progress=False)
                   for part in (rows[:6], rows[6:])]
    assert [r["id"] for r in load_records(output)] == [r["id"] for r in rows if r["response"] != "6"]
    assert [entry["reason"] for entry in _rejected(rejected)] == ["rejected before the map", "toy: three is unlucky"]
    assert [(r.records_in, r.records_out, r.records_rejected) for r in results] == [(6, 5, 1), (6, 6, 0)]
    assert results[0].output == str(output)


def _second_run(row: dict) -> dict:
    return _tagged(row, run=2)


def test_resume_appends_only_the_ids_not_yet_in_the_output(ray_local, tmp_path):
    source, output, rejected = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl"
    rows = _rows(10)
    write_records(output, [_tagged(r, run=1) for r in rows[:6]])  # an earlier run stopped after 6
    write_records(source, rows)

    result = run_row_stage(_second_run, stage="toy", input_path=source, output_path=output,
                           rejected_path=rejected, resume=True, progress=False)

    out = load_records(output)
    assert [r["id"] for r in out] == [r["id"] for r in rows[:6]] + [r["id"] for r in out[6:]]
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in rows)  # each id once
    assert [_tags(r)["run"] for r in out] == [1] * 6 + [2] * 4
    assert (result.records_in, result.records_out, result.records_rejected) == (10, 10, 0)

    again = run_row_stage(_second_run, stage="toy", input_path=source, output_path=output,
                          rejected_path=rejected, resume=True, progress=False)
    assert len(load_records(output)) == 10 and (again.records_out, again.nodes) == (10, [])  # nothing left to do


def _two_samples_each(problems: list[dict]):
    """A prepare hook: two sample rows per problem, but none for the problem about 3."""
    keep = [p for p in problems if "3" not in p["problem"]]
    return [for_sample(p, i) for p in keep for i in range(2)], [(p, "no 3s") for p in problems if p not in keep]


def _answered(table):
    from longcot import records

    return records.to_table([{**r, "response": "done"} for r in records.from_table(table)])


def _first_row_only(table):
    return table.slice(0, 1)


def test_a_map_step_stage_prepares_on_the_driver_and_a_lost_row_fails_the_run(ray_local, tmp_path):
    output, rejected = tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl"
    problems = [new_problem(f"What is {i} + {i}?", source="s") for i in range(4)]
    calls, blocks = [], []

    def observe(stream):
        for table in stream:
            blocks.append(table.num_rows)
            yield table

    answer = lambda ds: ds.map_batches(_answered, batch_format="pyarrow")  # noqa: E731
    result = run_row_stage(stage="toy", input_path=problems, output_path=output, rejected_path=rejected,
                           prepare=_two_samples_each, map_step=answer, check=lambda: calls.append("check"),
                           observe=observe, chunk_rows=2, resume=True, progress=False)

    assert {r["response"] for r in load_records(output)} == {"done"} and len(load_records(output)) == 6
    assert [entry["reason"] for entry in _rejected(rejected)] == ["no 3s"]
    assert (result.records_in, result.records_out, result.records_rejected, result.fan_out) == (4, 6, 1, True)
    assert calls == ["check"] and sum(blocks) == 6
    more = [*problems, new_problem("What is 9 + 9?", source="s")]
    lose = lambda ds: ds.map_batches(_first_row_only, batch_format="pyarrow", batch_size=None)  # noqa: E731
    with pytest.raises(RuntimeError, match="toy lost 1 of 2 rows between its map and"):  # the new problem's two
        run_row_stage(stage="toy", input_path=more, output_path=output, rejected_path=rejected,
                      prepare=_two_samples_each, map_step=lose, resume=True, progress=False)


def test_runs_at_once_share_one_progress_display(tmp_path):
    """A console renders one live display at a time (rich shows a second one only once it stops): runs that go on at
    once, as eval's model variants do, each add a bar to one shared display, and every row still reaches its own
    output."""
    import threading

    from longcot.dataflow import drain, run_concurrently, shared_progress
    from longcot.records import to_table

    both_started = threading.Barrier(2, timeout=30)

    def one_run(name: str, progress) -> int:
        def blocks():
            both_started.wait()  # the two bars are live at the same time
            yield to_table(_rows(3))

        with RecordWriter(tmp_path / f"{name}.jsonl") as out, RejectedWriter(tmp_path / f"{name}.rej.jsonl") as rej:
            return drain(blocks(), stage="generate", output=out, rejected=rej, total=3, progress=progress, label=name)

    with shared_progress(True) as display:
        assert run_concurrently([partial(one_run, "a", display), partial(one_run, "b", display)]) == [3, 3]
    # a bar each, in whichever order the threads got to the display first
    assert sorted(t.description for t in display.tasks) == ["a", "b"] and all(t.completed == 3 for t in display.tasks)
    assert all(len(load_records(tmp_path / f"{n}.jsonl")) == 3 for n in ("a", "b"))


def test_run_concurrently_keeps_the_order_bounds_the_calls_at_once_and_raises_after_all_end():
    import threading

    from longcot.dataflow import run_concurrently

    lock, running, peak, ended = threading.Lock(), [0], [0], []

    def call(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(1.0 - 0.2 * i)  # later calls end first; long enough for every thread to have started
        with lock:
            running[0] -= 1
            ended.append(i)
        if i == 1:
            raise ValueError("call 1 failed")
        return i * i

    assert run_concurrently([partial(call, i) for i in (0, 2, 3)]) == [0, 4, 9] and peak[0] == 3
    peak[0] = 0
    assert run_concurrently([partial(call, i) for i in (0, 2, 3, 4)], at_most=2) == [0, 4, 9, 16] and peak[0] == 2
    ended.clear()
    with pytest.raises(ValueError, match="call 1 failed"):
        run_concurrently([partial(call, i) for i in (0, 1, 2)])
    assert sorted(ended) == [0, 1, 2]  # raised once every call had ended, not at the first error
