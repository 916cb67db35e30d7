"""The trace record: the one schema that flows through every stage.

A record starts as a *problem* (``problems`` stage), becomes a *sample* once a teacher answers it
(``generate``), gains a verdict (``verify``), may be rewritten (``dlcot`` / ``perturb``) and is finally
trained on or scored (``train`` / ``eval``). Every stage fills in fields of this one schema and appends
one entry to ``lineage``; no stage invents a schema of its own.

Rows are plain dicts (what ``ray.data.Dataset.map`` passes around). ``conform`` makes any dict a full
record, and ``to_table`` / ``from_table`` convert a list of rows to and from Arrow with ``SCHEMA``.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterable, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

SEGMENT_TYPE = pa.struct(
    [
        ("kind", pa.string()),  # restatement | understanding | exploration | verification | conclusion
        ("start", pa.int64()),  # character offsets into the original thought, end exclusive
        ("end", pa.int64()),
        ("approach", pa.int64()),  # 1-based approach index inside exploration/verification, null elsewhere
        ("cluster", pa.int64()),  # redundancy cluster id, null when not clustered
        ("label", pa.string()),  # correct | incorrect | incomplete | confirm | fault | null
        ("kept", pa.bool_()),
        ("reason", pa.string()),  # why a segment was dropped (null when kept)
    ]
)

LINEAGE_TYPE = pa.struct(
    [
        ("stage", pa.string()),
        ("at", pa.string()),  # ISO-8601 UTC timestamp
        ("detail", pa.string()),  # JSON object: what the stage did (model, sampling, ratios, ...)
    ]
)

# (name, type, doc). Order is the column order on disk.
FIELDS: list[tuple[str, pa.DataType, str]] = [
    # identity and problem
    ("id", pa.string(), "stable hash of the problem and the sample index"),
    ("problem_id", pa.string(), "stable hash of the problem text and source"),
    ("sample_index", pa.int64(), "0..n-1 among the samples of one problem"),
    ("source", pa.string(), "where the problem came from, e.g. benchmark:gsm8k or file:x.jsonl"),
    ("domain", pa.string(), "math | code | mcq | gym"),
    ("problem", pa.string(), "the problem statement shown to the model"),
    ("reference_answer", pa.string(), "the gold answer (math/mcq/gym), null for code"),
    ("tests", pa.string(), "JSON: code tests or verifier payload, null when not needed"),
    ("metadata", pa.string(), "JSON object of source fields kept for reference"),
    # generation
    ("prompt", pa.string(), "the rendered prompt (chat template applied) sent to the model"),
    ("response", pa.string(), "the model's full output"),
    ("original_response", pa.string(), "the response before a transform rewrote it"),
    ("model", pa.string(), "model reference that produced the response"),
    ("finish_reason", pa.string(), "stop | length | error"),
    ("prompt_tokens", pa.int64(), "tokens in the prompt"),
    ("output_tokens", pa.int64(), "tokens in the response"),
    # parsing and verification
    ("thought", pa.string(), "the thought section of the response"),
    ("solution", pa.string(), "the solution section of the response"),
    ("markers", pa.string(), "marker convention found: sky | think | none"),
    ("truncated", pa.bool_(), "the response stops before its closing marker or hit max_tokens"),
    ("thought_tokens", pa.int64(), "tokens in the thought"),
    ("solution_tokens", pa.int64(), "tokens in the solution"),
    ("predicted_answer", pa.string(), "the final answer extracted from the response"),
    ("verdict", pa.string(), "correct | incorrect | no_answer | timeout | error"),
    ("correct", pa.bool_(), "verdict == correct"),
    ("error", pa.string(), "what went wrong producing or checking this row, null when fine"),
    # transforms
    ("dlcot_response", pa.string(), "the DLCoT-simplified response, null when skipped"),
    ("dlcot_skip_reason", pa.string(), "why DLCoT left the record alone"),
    ("segments", pa.list_(SEGMENT_TYPE), "DLCoT segmentation of the thought"),
    ("tokens_before", pa.int64(), "student-tokenizer tokens before a transform"),
    ("tokens_after", pa.int64(), "student-tokenizer tokens after a transform"),
    # bookkeeping
    ("reject_reason", pa.string(), "set when a stage could not process the row; such rows go to rejected"),
    ("lineage", pa.list_(LINEAGE_TYPE), "what each stage did to the record, in order"),
]

SCHEMA = pa.schema([pa.field(name, typ) for name, typ, _ in FIELDS])
FIELD_NAMES = [name for name, _, _ in FIELDS]
_JSON_FIELDS = {"tests", "metadata"}


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short, stable hex digest of the JSON form of ``parts`` (same input, same id, on any machine)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


_SPACE = re.compile(r"\s+")


def problem_key(text: str) -> str:
    """Problem text with whitespace collapsed: how one problem is recognised across files and sources
    (a benchmark, a recording of teacher output, the problems a student trained on)."""
    return _SPACE.sub(" ", text).strip()


def problem_id(problem: str, source: str | None = None) -> str:
    return stable_hash("problem", source or "", problem)


def sample_id(pid: str, sample_index: int) -> str:
    return stable_hash("sample", pid, int(sample_index))


def new_problem(
    problem: str,
    *,
    source: str,
    domain: str = "math",
    reference_answer: Any = None,
    tests: Any = None,
    metadata: dict | None = None,
) -> dict:
    """A fresh record for a problem, before any sample exists (``sample_index`` is null)."""
    pid = problem_id(problem, source)
    return conform(
        {
            "id": pid,
            "problem_id": pid,
            "source": source,
            "domain": domain,
            "problem": problem,
            "reference_answer": None if reference_answer is None else str(reference_answer),
            "tests": tests,
            "metadata": metadata,
        }
    )


def for_sample(problem_row: dict, sample_index: int) -> dict:
    """The record of sample ``sample_index`` of a problem: same problem fields, its own stable id."""
    return {**problem_row, "sample_index": int(sample_index), "id": sample_id(problem_row["problem_id"], sample_index)}


class Lineage(BaseModel):
    """What one stage says in a record's lineage about how it made the record. Each stage declares a
    subclass beside its config, named for its stage (``class GenerateLineage(Lineage, stage="generate")``),
    with one field per key of the detail; a typo in a writer fails when the detail is built."""

    model_config = ConfigDict(extra="forbid")

    stage: ClassVar[str]

    def __init_subclass__(cls, stage: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if stage is not None:
            cls.stage = stage


class ModelLineage(Lineage):
    """The lineage of a stage that ran a model: which backend ran which model."""

    backend: str = Field(description="The backend that ran the model.")
    model: str = Field(description="The model it ran.")


L = TypeVar("L", bound=Lineage)


def add_lineage(row: dict, detail: Lineage) -> dict:
    """Return ``row`` with one more lineage entry for ``detail.stage``. The detail is stored as a JSON
    object of the fields the writer set, so its keys are exactly those written."""
    entry = {
        "stage": detail.stage,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "detail": json.dumps(detail.model_dump(mode="json", exclude_unset=True), sort_keys=True,
                             ensure_ascii=False),
    }
    return {**row, "lineage": [*(row.get("lineage") or []), entry]}


def lineage_detail(row: dict, kind: type[L]) -> L | None:
    """The detail of the last lineage entry of ``kind.stage``, read as ``kind`` (None when the stage left
    none). Keys ``kind`` does not declare (a record written by another version) are ignored."""
    for entry in reversed(row.get("lineage") or []):
        if entry["stage"] == kind.stage:
            data = json.loads(entry["detail"])
            return kind.model_validate({k: v for k, v in data.items() if k in kind.model_fields})
    return None


def json_field(row: dict, name: str) -> Any:
    """Decode a JSON-encoded field (``tests``, ``metadata``); None stays None."""
    value = row.get(name)
    return None if value is None else json.loads(value)


def conform(row: dict) -> dict:
    """Return a dict with exactly the schema's fields: missing ones become None, JSON fields are encoded.

    Unknown keys are an error rather than silently dropped, so a typo in a stage fails its tests.
    """
    if unknown := set(row) - set(FIELD_NAMES):
        raise KeyError(f"fields not in the record schema: {sorted(unknown)}")
    out = {name: row.get(name) for name in FIELD_NAMES}
    for name in _JSON_FIELDS:
        if out[name] is not None and not isinstance(out[name], str):
            out[name] = json.dumps(out[name], sort_keys=True, ensure_ascii=False, default=str)
    return out


class RowError(ValueError):
    """An input row that cannot become a record (a field of the wrong type); the message says which."""


_CHECKS = {
    pa.string(): (str, "text"),
    pa.int64(): (int, "an integer"),
    pa.bool_(): (bool, "true or false"),
}


def _typed(name: str, typ: pa.DataType, value: Any) -> Any:
    """``value`` if it has the type of field ``name`` (never converted), else ``RowError``."""
    if value is None:
        return None
    if name in _JSON_FIELDS:
        if isinstance(value, (str, dict, list)):
            return value
        raise RowError(f"field {name!r}: expected JSON text or an object, got {type(value).__name__}")
    if typ in _CHECKS:
        kind, said = _CHECKS[typ]
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise RowError(f"field {name!r}: expected {said}, got {type(value).__name__} {str(value)[:40]!r}")
    wanted = {f.name for f in typ.value_type}  # a list of structs: segments, lineage
    if not isinstance(value, list) or not all(isinstance(v, dict) and set(v) <= wanted for v in value):
        raise RowError(f"field {name!r}: expected a list of objects with keys {sorted(wanted)}")
    return value


def from_row(row: dict, *, source: str, seen: dict[str, int], line: int) -> dict:
    """A full record from any input row: schema fields kept as they are (of the right type, or ``RowError``),
    every other column kept in ``metadata`` (never dropped), ids filled in when the row has none.

    ``source`` names rows that have no source (``file:NAME``); ``seen`` counts the samples of each problem
    read so far, so rows of one problem without ids become samples 0, 1, 2, ... in file order; a row without
    an id keeps its ``line`` in the file as ``metadata.source_line``.
    """
    out = {name: _typed(name, typ, row[name]) for name, typ, _ in FIELDS if name in row}
    extra = {k: v for k, v in row.items() if k not in out}
    if extra or not out.get("id"):
        meta = out.get("metadata")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except json.JSONDecodeError:
                raise RowError("field 'metadata': not JSON text") from None
        meta = dict(meta) if isinstance(meta, dict) else ({} if meta is None else {"metadata": meta})
        for key, value in extra.items():
            meta[key if key not in meta else f"column:{key}"] = value
        if not out.get("id"):
            meta.setdefault("source_line", line)
        out["metadata"] = meta
    if not out.get("id"):
        if not out.get("problem_id"):
            if not isinstance(out.get("problem"), str):
                raise RowError("no 'id' and no 'problem' text to make one from")
            out["source"] = out.get("source") or source
            out["problem_id"] = problem_id(out["problem"], out["source"])
        if out.get("sample_index") is None:
            out["sample_index"] = seen.get(out["problem_id"], 0)
            seen[out["problem_id"]] = out["sample_index"] + 1
        out["id"] = sample_id(out["problem_id"], out["sample_index"])
    return conform(out)


def to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows (full or partial records) to an Arrow table with exactly ``SCHEMA``."""
    return pa.Table.from_pylist([conform(r) for r in rows], schema=SCHEMA)


def from_table(table: pa.Table) -> list[dict]:
    """An Arrow table (any column subset of ``SCHEMA``) back to full records."""
    return [conform(r) for r in table.to_pylist()]

