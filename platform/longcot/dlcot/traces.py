"""Raw trace files as DLCoT input: JSONL/Parquet rows with a problem, a reference answer and a response.

Read as every stage reads its input (``recordfiles.read_records``): a longcot record file as it is, any other
file with its columns mapped by ``TraceFields`` to record fields, every other column kept in ``metadata``
(the id column as ``source_id`` too), stable ids from the problem and its position among the rows of the
same problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from longcot import records
from longcot.dlcot.config import TraceFields
from longcot.errors import InputError
from longcot.recordfiles import BadLine, read_records


def read_traces(path: str | Path, fields: TraceFields) -> Iterator[dict | BadLine]:
    """Records of the traces in ``path``; a line or row that cannot be read comes as ``BadLine``.

    Raises ``InputError`` when no row has a response (the field mapping is wrong).
    """
    rename = {fields.problem: "problem", fields.reference_answer: "reference_answer", fields.response: "response"}
    rows = with_response = 0
    for item in read_records(path, rename=rename):
        if not isinstance(item, BadLine):  # a bad line goes on as it is: the stage reading this rejects it
            rows += 1
            with_response += item.get("response") is not None
            meta = json.loads(item["metadata"]) if item.get("metadata") else {}
            if fields.id and fields.id in meta and "source_id" not in meta:
                item = records.conform({**item, "metadata": {**meta, "source_id": meta[fields.id]}})
        yield item
    if rows and not with_response:
        raise InputError(f"no row has the response column {fields.response!r}; set dlcot.fields.response", str(path))
