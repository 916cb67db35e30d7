"""Raw trace files as DLCoT input: JSONL/Parquet rows with a problem, a reference answer and a response.

A file of longcot records (every column a record field) is read as it is. Any other file is mapped
with ``TraceFields``: each row becomes a sample record (stable ids from the problem and its position
among the rows of the same problem), every unmapped column is kept in ``metadata``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

from longcot import records
from longcot.dlcot.config import TraceFields
from longcot.errors import InputError
from longcot.recordfiles import BadLine, read_raw


def read_traces(path: str | Path, fields: TraceFields) -> Iterator[dict | BadLine]:
    """Records of the traces in ``path``; a malformed line comes as ``BadLine`` (file and line number).

    Raises ``InputError`` when no row has the response column (the field mapping is wrong).
    """
    p = Path(path)
    source = f"file:{p.name}"
    seen: Counter[str] = Counter()
    rows = 0
    with_response = 0
    for item in read_raw(p):
        if isinstance(item, BadLine):
            yield item
            continue
        number, row = item
        rows += 1
        if set(row) <= set(records.FIELD_NAMES):
            with_response += row.get("response") is not None
            yield records.conform(row)
            continue
        with_response += fields.response in row
        used = {fields.problem, fields.reference_answer, fields.response}
        metadata = {k: v for k, v in row.items() if k not in used}
        metadata["line"] = number
        if fields.id and fields.id in row:
            metadata["source_id"] = row[fields.id]
        problem = row.get(fields.problem)
        record = records.new_problem(
            problem if isinstance(problem, str) else "",
            source=source,
            reference_answer=row.get(fields.reference_answer),
            metadata=metadata,
        )
        record = records.for_sample(record, seen[record["problem_id"]])
        seen[record["problem_id"]] += 1
        response = row.get(fields.response)
        record["response"] = response if isinstance(response, str) else None
        yield record
    if rows and not with_response:
        raise InputError(f"no row has the response column {fields.response!r}; set dlcot.fields.response", str(p))
