"""Saved responses as sample records, ready to re-score without generating.

In: a longcot record file, or any JSONL/Parquet with at least ``problem`` and ``response`` columns
(``reference_answer``, ``benchmark``, token counts and anything else optional). Each row is matched to
its benchmark's problem by text, which supplies the domain, code tests and the reference answer when the
row has none; columns outside the record schema are kept in ``metadata``.
Out: sample records (one id per problem and sample index). Rejected, with file and line: malformed
lines, rows without a problem or response, rows of an unknown benchmark, rows nothing can be checked
against (no reference answer and no tests).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections import defaultdict
from dataclasses import dataclass, field

from longcot import records
from longcot.errors import InputError, RejectRow
from longcot.generate.samples import as_problem
from longcot.problems import benchmarks
from longcot.recordfiles import BadLine, bad_line_record, read_raw
from longcot.records import problem_key


@dataclass
class LoadedResponses:
    rows: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # RejectedWriter entries: {stage, reason, record}
    benchmarks: set[str] = field(default_factory=set)
    matched: int = 0  # rows found among their benchmark's problems


def _benchmark_name(row: dict, default: str | None) -> str | None:
    if default:
        return default
    if isinstance(row.get("benchmark"), str):
        return row["benchmark"]
    source = row.get("source")
    if isinstance(source, str) and source.startswith("benchmark:"):
        return source.split(":", 1)[1]
    return None


# a sample's identity comes from its benchmark problem, not the saved row; the row's lineage is copied apart
_IDENTITY = ("id", "problem_id", "sample_index", "source", "problem", "lineage")


def sample_from_row(row: dict, problem_row: dict, sample_index: int) -> dict:
    """A sample record: the benchmark problem's fields, plus the row's schema fields (response, counts...)."""
    extra = {k: v for k, v in row.items() if k not in records.FIELD_NAMES}
    own = {k: v for k, v in row.items() if k in records.FIELD_NAMES and k not in _IDENTITY and v is not None}
    sample = {**records.for_sample(problem_row, sample_index), **own, "lineage": list(row.get("lineage") or [])}
    if extra:
        meta = {**(records.json_field(problem_row, "metadata") or {}), "saved": extra}
        sample["metadata"] = json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str)
    return records.conform(sample)


def load_responses(path: str, *, benchmark: str | None = None,
                   registry: dict[str, benchmarks.BenchmarkSpec] | None = None) -> LoadedResponses:
    """Read saved responses from ``path`` into sample records (see the module docstring)."""
    registry = registry if registry is not None else benchmarks.load_registry()
    if benchmark:
        benchmarks.spec_of(registry, benchmark, "eval.responses: ")

    @functools.cache
    def problems_by_text(name: str) -> dict[str, dict]:  # a benchmark's problems, loaded on first use
        return {problem_key(r["problem"]): r for r in benchmarks.iter_problems(registry[name])}

    loaded = LoadedResponses()
    used: dict[str, set[int]] = defaultdict(set)  # problem id -> sample indices given out
    for item in read_raw(path):
        if isinstance(item, BadLine):
            loaded.rejected.append(bad_line_record(item, "eval"))
            continue
        number, row = item
        try:
            problem, response = row.get("problem"), row.get("response")
            if not isinstance(problem, str) or not problem.strip():
                raise RejectRow("no `problem` text")
            if not isinstance(response, str):
                raise RejectRow("no `response` text")
            name = _benchmark_name(row, benchmark)
            if name is not None and name not in registry:
                raise RejectRow(f"unknown benchmark {name!r} (allowed: {', '.join(sorted(registry))})")
            problem_row = problems_by_text(name).get(problem_key(problem)) if name is not None else None
            if problem_row is not None:
                loaded.matched += 1
            elif row.get("problem_id") and row.get("source"):  # a longcot record: it keeps its own identity
                problem_row = as_problem(row)
            else:
                source = f"benchmark:{name}" if name else f"file:{path}"
                domain = registry[name].domain if name else (row.get("domain") or "math")
                problem_row = records.new_problem(problem, source=source, domain=domain,
                                                  reference_answer=row.get("reference_answer"), tests=row.get("tests"))
            if problem_row["reference_answer"] is not None:  # the benchmark's own gold answer decides
                row = {k: v for k, v in row.items() if k != "reference_answer"}
            elif row.get("reference_answer") is None and problem_row["tests"] is None and row.get("tests") is None:
                raise RejectRow("nothing to check the response against: no reference_answer and no tests")
            taken = used[problem_row["problem_id"]]
            own_index = row.get("sample_index")  # a record keeps its sample index (and so its id), unless taken
            keeps_own = isinstance(own_index, int) and own_index >= 0 and own_index not in taken
            index_in_problem = own_index if keeps_own else next(i for i in itertools.count() if i not in taken)
            taken.add(index_in_problem)
            try:
                sample = sample_from_row(row, problem_row, index_in_problem)
            except (KeyError, TypeError, ValueError) as exc:
                raise RejectRow(f"cannot make a record: {exc}") from None
        except RejectRow as exc:
            loaded.rejected.append({"stage": "eval", "reason": f"{path}:{number}: {exc.reason}", "record": row})
            continue
        if name:
            loaded.benchmarks.add(name)
        loaded.rows.append(sample)
    if not loaded.rows and not loaded.rejected:
        raise InputError("holds no rows", path)
    return loaded
