"""Records to training sequences: chat messages, token ids with an assistant-only loss mask, packs.

Pure functions, testable without Ray; ``stage`` maps ``encode_batch`` and ``pack_batch`` over Ray Datasets
and the workers collate with ``collate_packs``.

- ``chat_messages``: user turn = problem + instruction (optional system turn), assistant turn = the
  response (``dlcot_response`` where DLCoT rewrote it). Rejected: no problem, no response, a verdict that
  is known and not correct (with ``only_correct``).
- ``encode``: the student's chat template; labels are ``IGNORE`` on every prompt token, so the loss is on
  the assistant's tokens only. Longer than ``cutoff_len``: cut (or rejected with ``truncation: drop``);
  rejected when the prompt alone fills the cutoff.
- ``plan_packs``: first-fit-decreasing packing of examples into sequences of at most ``cutoff_len``
  tokens. A pack is trained as one flattened row whose ``position_ids`` restart at every example, which
  transformers turns into a per-example (block-diagonal) attention mask: nothing leaks across examples
  and nothing is padded.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longcot.errors import RejectRow
from longcot.train.config import DataSettings

IGNORE = -100  # label of a token the loss skips (transformers' ignore_index)

ENCODED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("length", pa.int64()),  # tokens before the cutoff (null when the row could not be tokenized)
        ("truncated", pa.bool_()),
        ("reject_reason", pa.string()),
    ]
)

PACK_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.list_(pa.int32()))),  # one inner list per example of the pack
        ("labels", pa.list_(pa.list_(pa.int32()))),
        ("tokens", pa.int64()),
    ]
)


class TooLong(RejectRow):
    """An example the cutoff rejects; ``length`` (its tokens) still counts in the length report."""

    def __init__(self, reason: str, length: int):
        super().__init__(reason)
        self.length = length


@dataclass
class Example:
    """One tokenized conversation. ``length`` counts tokens before the cutoff."""

    input_ids: list[int]
    labels: list[int]
    length: int
    truncated: bool


def chat_messages(row: dict, data: DataSettings) -> list[dict]:
    """The conversation of a record: the student's prompt (``DataSettings.prompt``: [system], user = problem +
    instruction), then the assistant turn: the text the student learns to produce (``data.response_field``)."""
    if data.only_correct and row.get("correct") is False:
        raise RejectRow(f"verdict is {row.get('verdict') or 'incorrect'}; only_correct keeps correct traces only")
    if not (row.get("problem") or "").strip():
        raise RejectRow("no problem text")
    field = data.response_field
    response = (row.get("dlcot_response") or row.get("response")) if field == "auto" else row.get(field)
    if not response or not response.strip():
        raise RejectRow(f"no {'response' if field == 'auto' else field} text to train on")
    return data.prompt().messages(row) + [{"role": "assistant", "content": response}]


def split_heldout(rows: list[dict], problems: int, seed: int, data: DataSettings) -> tuple[list[dict], list[dict]]:
    """``(train, heldout)``: every record of ``problems`` problems goes to ``heldout``, the rest to ``train``.

    The problems are chosen among those with a record training would accept (a held-out problem needs a
    teacher trace to measure on), first in the order of a hash of ``seed`` and the problem text, so neither
    the input's order nor the other problems change which are held out.
    """
    from longcot import records

    def key(row: dict) -> str:
        return records.problem_key(row.get("problem") or "")

    eligible = set()
    for row in rows:
        with contextlib.suppress(RejectRow):
            chat_messages(row, data)
            eligible.add(key(row))
    chosen = set(sorted(eligible, key=lambda k: records.stable_hash("heldout", seed, k))[:problems])
    return [r for r in rows if key(r) not in chosen], [r for r in rows if key(r) in chosen]


def encode(messages: list[dict], tokenizer, cutoff_len: int, truncation: str = "truncate") -> Example:
    """Token ids of ``messages`` with the tokenizer's chat template, labels masked to the last (assistant) turn.

    The prompt and the answer are tokenized apart, so the prompt tokens are exactly what the student sees
    at inference (the template with the assistant turn opened).
    """
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise RejectRow("the chat template does not render the prompt as a prefix of the full conversation")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    length = len(prompt_ids) + len(answer_ids)
    if len(prompt_ids) >= cutoff_len:
        raise TooLong(f"the prompt alone has {len(prompt_ids)} tokens, cutoff_len is {cutoff_len}", length)
    truncated = length > cutoff_len
    if truncated and truncation == "drop":
        raise TooLong(f"{length} tokens exceed cutoff_len {cutoff_len} (truncation: drop)", length)
    input_ids = (prompt_ids + answer_ids)[:cutoff_len]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:cutoff_len]
    return Example(input_ids=input_ids, labels=labels, length=length, truncated=truncated)


@functools.lru_cache(maxsize=2)
def _tokenizer(model: str):
    from longcot.models import load_tokenizer

    return load_tokenizer(model, padding_side="right")


def encode_batch(table: pa.Table, *, model: str, data: dict[str, Any]) -> pa.Table:
    """``map_batches`` function: records in, ``ENCODED_SCHEMA`` rows out (a failed row keeps its reason)."""
    from longcot import records

    settings = DataSettings.model_validate(data)
    tokenizer = _tokenizer(model)
    out = []
    for row in records.from_table(table):
        example, reason, length = None, None, None
        try:
            example = encode(chat_messages(row, settings), tokenizer, settings.cutoff_len, settings.truncation)
            length = example.length
        except RejectRow as exc:  # a TooLong one still has its length
            reason, length = exc.reason, getattr(exc, "length", None)
        except Exception as exc:  # bad data in one row must not stop the others
            reason = f"cannot tokenize: {type(exc).__name__}: {exc}"
        out.append({"id": row["id"], "input_ids": example and example.input_ids, "labels": example and example.labels,
                    "length": length, "truncated": length is not None and length > settings.cutoff_len,
                    "reject_reason": reason})
    return pa.Table.from_pylist(out, schema=ENCODED_SCHEMA)


def plan_packs(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into packs of at most ``capacity`` tokens (first fit, longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packs: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"example {i} has {size} tokens, more than the pack capacity {capacity}")
        for p, free in enumerate(room):
            if size <= free:
                packs[p].append(i)
                room[p] -= size
                break
        else:
            packs.append([i])
            room.append(capacity - size)
    return packs


def pack_batch(table: pa.Table, *, capacity: int, packing: bool) -> pa.Table:
    """``map_batches`` function: encoded rows in (rejected ones skipped), ``PACK_SCHEMA`` rows out."""
    good = table.filter(pc.is_null(table.column("reject_reason")))
    input_ids = good.column("input_ids").to_pylist()
    labels = good.column("labels").to_pylist()
    lengths = [len(ids) for ids in input_ids]
    groups = plan_packs(lengths, capacity) if packing else [[i] for i in range(len(lengths))]
    return pa.Table.from_pydict(
        {
            "input_ids": [[input_ids[i] for i in group] for group in groups],
            "labels": [[labels[i] for i in group] for group in groups],
            "tokens": [sum(lengths[i] for i in group) for group in groups],
        },
        schema=PACK_SCHEMA,
    )


def collate_packs(input_ids: Sequence[Sequence[Sequence[int]]], labels: Sequence[Sequence[Sequence[int]]]) -> dict:
    """A batch of packs as one flattened row (tensors): input_ids, labels, position_ids restarting per example."""
    from transformers import DataCollatorWithFlattening

    features = [
        {"input_ids": list(ids), "labels": list(labs)}
        for pack_ids, pack_labels in zip(input_ids, labels)
        for ids, labs in zip(pack_ids, pack_labels)
    ]
    return DataCollatorWithFlattening(return_tensors="pt")(features)


@dataclass
class LengthReport:
    """Token lengths of the encoded examples (before the cutoff) and what the cutoff does to them."""

    count: int
    cutoff_len: int
    truncated: int
    quantiles: dict[str, int]
    histogram: list[tuple[str, int]]
    truncation: str = "truncate"  # what the cutoff does to a longer example: truncate (cut) or drop

    @property
    def truncated_share(self) -> float:
        return self.truncated / self.count if self.count else 0.0

    def lines(self) -> list[str]:
        if not self.count:
            return ["no examples were tokenized"]
        q = self.quantiles
        return [
            f"token lengths of {self.count} examples: min {q['min']:,}, p50 {q['p50']:,}, p90 {q['p90']:,}, "
            f"p99 {q['p99']:,}, max {q['max']:,}, mean {q['mean']:,}",
            "  " + "  ".join(f"{label}: {n}" for label, n in self.histogram),
            f"cutoff_len {self.cutoff_len:,} {'drops' if self.truncation == 'drop' else 'truncates'} "
            f"{self.truncated} of {self.count} examples ({self.truncated_share:.1%})",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated_share": round(self.truncated_share, 4), "histogram": dict(self.histogram)}


def length_report(lengths: Sequence[int], cutoff_len: int, truncation: str = "truncate") -> LengthReport:
    """Quantiles, a power-of-two histogram up to the cutoff, and how many examples exceed the cutoff (and so
    are cut, or dropped with ``truncation: drop``)."""
    arr = np.asarray(list(lengths), dtype=np.int64)
    if arr.size == 0:
        return LengthReport(0, cutoff_len, 0, {}, [], truncation)
    p50, p90, p99 = (int(q) for q in np.percentile(arr, [50, 90, 99]))
    quantiles = {"min": int(arr.min()), "p50": p50, "p90": p90, "p99": p99, "max": int(arr.max()),
                 "mean": int(round(float(arr.mean())))}
    edges = [*itertools.takewhile(lambda e: e < cutoff_len, (256 << i for i in itertools.count())), cutoff_len]
    counts = np.bincount(np.searchsorted(edges, arr), minlength=len(edges) + 1)  # bin i: edges[i-1] < n <= edges[i]
    labels = [f"<={edge:,}" for edge in edges] + [f">{cutoff_len:,}"]
    histogram = [(label, int(n)) for label, n in zip(labels, counts)]
    return LengthReport(int(arr.size), cutoff_len, int(counts[-1]), quantiles, histogram, truncation)
