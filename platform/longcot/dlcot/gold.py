"""How a DLCoT simplification agrees with an expert gold segmentation of the same trace.

A gold file (``jobs/data/dlcot_gold/``, its README gives the format) marks, per trace, paragraph ranges of
the thought (the text between the thought markers, split on ``"\\n\\n"``, indices from 0): where the first
final answer and the first correct one are stated, and what an ideal keep-first-correct simplification
keeps. Gold entries are found by problem: a gold id ``<benchmark>-<idx>`` names the row with that ``idx`` in
the traces file the gold was made from.

The measures compare characters, whitespace ignored:

- ``exploration_cut``: the share of what gold keeps up to the end of ``first_correct_para`` that the
  simplification drops (real working cut);
- ``over_cut``: the share of everything gold keeps that the simplification drops;
- ``under_cut``: the share of what gold drops that the simplification keeps;
- ``kept_share``: kept characters over all characters of the thought (the simplification's and gold's);
- ``boundary_error``: the paragraph where the simplification's exploration ends minus gold's
  ``first_final_answer_para``.

Pure functions; the dlcot stage and ``longcot dlcot --gold`` call them.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Iterable

from longcot.errors import InputError
from longcot.recordfiles import BadLine, read_raw
from longcot.records import problem_key
from longcot.traces import parse_trace

PARAGRAPH = "\n\n"


@dataclass(frozen=True)
class GoldTrace:
    id: str
    n_paras: int
    first_final_answer_para: int
    first_correct_para: int
    keep: tuple[tuple[int, int], ...]  # inclusive paragraph ranges
    notes: str = ""


def load_gold(path: str | Path, traces: str | Path) -> dict[str, GoldTrace]:
    """Gold entries by problem key (``records.problem_key`` of the problem they belong to).

    ``traces`` is the trace file the gold was made from: a gold id ``NAME-<idx>`` is the row whose ``idx``
    is ``<idx>``. Raises ``InputError`` naming the file and line of an entry that cannot be used.
    """
    rows = (item[1] for item in read_raw(traces) if not isinstance(item, BadLine))
    problems = {str(row.get("idx")): row["problem"] for row in rows}
    out: dict[str, GoldTrace] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                idx = entry["id"].rsplit("-", 1)[1]
                gold = GoldTrace(entry["id"], int(entry["n_paras"]), int(entry["first_final_answer_para"]),
                                 int(entry["first_correct_para"]), tuple(tuple(r) for r in entry["keep"]),
                                 entry.get("notes") or "")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(f"not a gold entry ({type(exc).__name__}: {exc})", str(path), number) from None
            if idx not in problems:
                raise InputError(f"gold {entry['id']}: no trace with idx {idx} in {traces}", str(path), number)
            out[problem_key(problems[idx])] = gold
    return out


def paragraph_spans(thought: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each paragraph of ``thought`` split on blank lines, as gold numbers them."""
    parts = thought.split(PARAGRAPH)
    starts = accumulate((len(part) + len(PARAGRAPH) for part in parts), initial=0)
    return [(start, start + len(part)) for start, part in zip(starts, parts)]


@dataclass
class Agreement:
    id: str
    problem_id: str | None
    exploration_cut: float
    over_cut: float
    under_cut: float
    kept_share: float
    gold_kept_share: float
    boundary_error: int | None
    paragraphs: int


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def agreement(record: dict, gold: GoldTrace) -> Agreement:
    """The measures (module docstring) of a transformed record (``segments`` set) against its gold entry."""
    thought = parse_trace(record.get("original_response") or record["response"]).thought
    paras = paragraph_spans(thought)
    if len(paras) != gold.n_paras:
        raise ValueError(f"{gold.id}: the thought has {len(paras)} paragraphs, gold counts {gold.n_paras}")
    gold_kept = {i for first, last in gold.keep for p in range(first, last + 1) for i in range(*paras[p])}
    ours = {i for seg in record["segments"] if seg["kept"] for i in range(seg["start"], seg["end"])}
    explored_to = next((seg["end"] for seg in reversed(record["segments"]) if seg["kind"] == "exploration"), None)
    visible = [i for i, ch in enumerate(thought) if not ch.isspace()]
    correct_end = paras[gold.first_correct_para][1]
    g_kept = [i for i in visible if i in gold_kept]
    g_dropped = [i for i in visible if i not in gold_kept]
    early = [i for i in g_kept if i < correct_end]
    boundary = None
    if explored_to is not None:
        last = max((i for i in visible if i < explored_to), default=0)
        boundary = next(k for k, (a, b) in enumerate(paras) if a <= last < b) - gold.first_final_answer_para
    return Agreement(
        id=gold.id, problem_id=record.get("problem_id"),
        exploration_cut=_share(sum(i not in ours for i in early), len(early)),
        over_cut=_share(sum(i not in ours for i in g_kept), len(g_kept)),
        under_cut=_share(sum(i in ours for i in g_dropped), len(g_dropped)),
        kept_share=_share(sum(i in ours for i in visible), len(visible)),
        gold_kept_share=_share(len(g_kept), len(visible)),
        boundary_error=boundary, paragraphs=len(paras),
    )


def compare(records: Iterable[dict], gold: dict[str, GoldTrace]) -> tuple[list[Agreement], list[str]]:
    """Agreement of every transformed record that has a gold entry; and the gold ids with no transformed
    record (skipped by DLCoT, or absent from the input)."""
    found: dict[str, Agreement] = {}  # by gold id: the first transformed record of each
    for row in records:
        entry = gold.get(problem_key(row.get("problem") or ""))
        if entry is not None and row.get("segments") and entry.id not in found:
            found[entry.id] = agreement(row, entry)
    return list(found.values()), sorted(g.id for g in gold.values() if g.id not in found)


def summarize(found: list[Agreement], *, cut_limit: float = 0.05, over_limit: float = 0.10) -> dict:
    """Totals over traces: medians, and how many pass the limits the DLCoT issue set."""
    if not found:
        return {"traces": 0}
    boundaries = [a.boundary_error for a in found if a.boundary_error is not None]
    return {
        "traces": len(found),
        "exploration_cut_over_limit": sum(a.exploration_cut > cut_limit for a in found),
        "exploration_cut_limit": cut_limit,
        "over_cut_over_limit": sum(a.over_cut > over_limit for a in found),
        "over_cut_limit": over_limit,
        "median_over_cut": round(statistics.median(a.over_cut for a in found), 4),
        "median_under_cut": round(statistics.median(a.under_cut for a in found), 4),
        "median_kept_share": round(statistics.median(a.kept_share for a in found), 4),
        "gold_median_kept_share": round(statistics.median(a.gold_kept_share for a in found), 4),
        "boundary_within_2": sum(abs(b) <= 2 for b in boundaries),
        "median_abs_boundary_error": statistics.median(abs(b) for b in boundaries) if boundaries else None,
    }


def gold_rows(traces: list[dict]) -> list[list[str]]:
    """The ``traces`` of a ``gold.json`` as table cells, worst over-cut first: id, exploration cut, over-cut and
    under-cut (percent), kept share, gold kept share, boundary error ("-" where unmeasured)."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    return [[a["id"], pct(a["exploration_cut"]), pct(a["over_cut"]), pct(a["under_cut"]), f"{a['kept_share']:.3f}",
             f"{a['gold_kept_share']:.3f}", "-" if a["boundary_error"] is None else str(a["boundary_error"])]
            for a in sorted(traces, key=lambda a: -a["over_cut"])]
