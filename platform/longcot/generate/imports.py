"""Teacher output generated elsewhere, as longcot records: the open distillation sets and API dumps.

Every shape becomes one sample record per row: the user turn as ``problem``, the teacher's answer as
``response`` with its thought between markers (Sky-T1's kept as written, R1's ``<think>``, or a separate
reasoning field joined as ``<think>reasoning</think>answer``), the system turn and every other column in
``metadata``. ``metadata.instruction`` is set to ``""`` (the user turn was the whole problem), so the
train stage and ``longcot export`` rebuild the same user turn, and exporting an import gives back its
messages. A row that cannot be one trace (no user turn, no answer, several exchanges, a field of the wrong
type) is rejected with its line and reason.

Shapes (``shape``, ``auto`` tells them by their columns):

- ``sharegpt``: ``conversations`` of ``{from, value}`` (``human``/``user``, ``gpt``/``assistant``), an optional
  ``system``: Bespoke-Stratos-17k, OpenThoughts-114k;
- ``messages``: OpenAI ``messages`` of ``{role, content}``, the assistant's ``reasoning_content`` when there;
- ``columns``: a problem column and a response column (R1-style ``<think>`` inside, or none), and optionally
  a reasoning column (a DeepSeek API dump's ``reasoning_content``) and a reference answer column.

Sources: JSONL, Parquet, or a directory written by ``datasets``' ``save_to_disk`` (read with ``datasets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from longcot import records
from longcot.errors import InputError
from longcot.generate.prompting import with_thought
from longcot.problems.config import Domain
from longcot.recordfiles import BadLine, read_raw
from longcot.settings import StrictModel

Shape = Literal["auto", "sharegpt", "messages", "columns"]
USER = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "model"}


class ImportFields(StrictModel):
    """Which column holds what (the defaults are the shapes' own names)."""

    problem: str = Field("problem", description="columns: the problem (user turn) column.")
    response: str = Field("response", description="columns: the answer column (thought inside it, or not).")
    reasoning: str | None = Field(None, description="columns: a separate thought column (joined as <think>).")
    reference_answer: str | None = Field(None, description="Column with the reference answer, if any.")
    conversations: str = Field("conversations", description="sharegpt: the turns column.")
    system: str = Field("system", description="sharegpt: the system prompt column.")
    messages: str = Field("messages", description="messages: the messages column.")


class ImportConfig(StrictModel):
    """Read a distillation set or an API dump into longcot records."""

    shape: Shape = Field("auto", description="auto (by the columns), sharegpt, messages or columns.")
    fields: ImportFields = Field(default_factory=ImportFields)
    domain: Domain = Field("math", description="Domain of the problems.")
    source: str | None = Field(None, description="The records' source (default: file:NAME).")


def detect(row: dict, fields: ImportFields) -> str:
    if fields.conversations in row:
        return "sharegpt"
    if fields.messages in row:
        return "messages"
    return "columns"


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what}: expected non-empty text, got {type(value).__name__ if value is not None else 'nothing'}")
    return value


def _exchange(row: dict, column: str, role: str, users: set[str], answers: set[str], systems: set[str],
              noun: str) -> tuple[dict, dict, list[dict]]:
    """The user turn, the assistant turn and the system turns of a chat column (``ValueError`` unless it is a
    list of ``noun`` holding exactly one exchange)."""
    turns = row.get(column)
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ValueError(f"{column}: expected a list of {noun}")
    user = [t for t in turns if t.get(role) in users]
    answer = [t for t in turns if t.get(role) in answers]
    if len(user) != 1 or len(answer) != 1:
        raise ValueError(f"{len(user)} user and {len(answer)} assistant {noun.split()[-1]}: only one exchange "
                         "becomes a trace")
    return user[0], answer[0], [t for t in turns if t.get(role) in systems]


def from_sharegpt(row: dict, fields: ImportFields) -> tuple[str, str, str | None, set[str]]:
    user, answer, systems = _exchange(row, fields.conversations, "from", USER, ASSISTANT, {"system"},
                                      "{from, value} turns")
    system = row.get(fields.system) or (systems[0].get("value") if systems else None)
    problem = _text(user.get("value"), f"{fields.conversations} user turn")
    response = _text(answer.get("value"), f"{fields.conversations} assistant turn")
    return problem, response, system if isinstance(system, str) and system else None, {fields.conversations, fields.system}


def from_messages(row: dict, fields: ImportFields) -> tuple[str, str, str | None, set[str]]:
    user, answer, systems = _exchange(row, fields.messages, "role", {"user"}, {"assistant"}, {"system", "developer"},
                                      "{role, content} messages")
    problem = _text(user.get("content"), "user message content")
    content = answer.get("content") or ""
    reasoning = answer.get("reasoning_content")
    if reasoning is not None:
        response = with_thought(_text(reasoning, "assistant reasoning_content"), content)
    else:
        response = _text(content, "assistant message content")
    system = systems[0].get("content") if systems else None
    return problem, response, system if isinstance(system, str) and system else None, {fields.messages}


def from_columns(row: dict, fields: ImportFields) -> tuple[str, str, str | None, set[str]]:
    problem = _text(row[fields.problem], fields.problem)  # KeyError: no such column
    answer = row.get(fields.response)
    if fields.reasoning and row.get(fields.reasoning) is not None:
        response = with_thought(_text(row[fields.reasoning], fields.reasoning), answer if isinstance(answer, str) else "")
    else:
        response = _text(answer, fields.response)
    return problem, response, None, {fields.problem, fields.response, fields.reasoning}


SHAPES = {"sharegpt": from_sharegpt, "messages": from_messages, "columns": from_columns}


def record_of(row: dict, config: ImportConfig, source: str, seen: dict[str, int], line: int) -> dict:
    """The sample record of one row (``ValueError``/``KeyError`` with the reason when it cannot be one)."""
    fields = config.fields
    shape = config.shape if config.shape != "auto" else detect(row, fields)
    problem, response, system, used = SHAPES[shape](row, fields)
    reference = row.get(fields.reference_answer) if fields.reference_answer else None
    if reference is not None and not isinstance(reference, (str, int, float)):
        raise ValueError(f"{fields.reference_answer}: expected a value, got {type(reference).__name__}")
    metadata = {k: v for k, v in row.items() if k not in used | {fields.reference_answer}}
    metadata.update(instruction="", import_shape=shape, source_line=line)  # no instruction: the user turn was all
    if system:
        metadata["system"] = system
    rec = records.new_problem(problem, source=source, domain=config.domain, reference_answer=reference,
                              metadata=metadata)
    index = seen.get(rec["problem_id"], 0)
    seen[rec["problem_id"]] = index + 1
    return {**records.for_sample(rec, index), "response": response}


def _rows(path: Path) -> Iterator[tuple[int, dict] | BadLine]:
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "state.json").exists()):
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            raise InputError(f"holds the splits {list(loaded)}: import one of them (its directory)", str(path))
        for number, row in enumerate(loaded, start=1):
            yield number, dict(row)
        return
    yield from read_raw(path)


def import_rows(path: str | Path, config: ImportConfig) -> Iterator[dict | BadLine]:
    """Records of every row of ``path``, or ``BadLine`` (line, reason, the raw line or row) for a row that
    cannot be one. ``InputError`` when no row has the shape's columns (the wrong shape or field names)."""
    p = Path(path)  # missing: read_raw's InputError
    source = config.source or f"file:{p.name}"
    seen: dict[str, int] = {}
    rows = missing = 0
    for item in _rows(p):
        if isinstance(item, BadLine):
            yield item
            continue
        number, row = item
        rows += 1
        try:
            yield record_of(row, config, source, seen, number)
        except KeyError as exc:
            missing += 1
            yield BadLine(str(p), number, f"no column {exc.args[0]!r} (columns: {sorted(row)})", "", row)
        except ValueError as exc:
            yield BadLine(str(p), number, str(exc), "", row)
    if rows and missing == rows:
        raise InputError(f"no row has the columns the {config.shape} shape reads; set --shape or --field", str(p))


def metadata_system(row: dict) -> str | None:
    """The system turn an imported row came with."""
    meta = records.json_field(row, "metadata") or {}
    return meta.get("system") if isinstance(meta, dict) else None
