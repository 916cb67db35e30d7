"""DLCoT's last step, optional: a rewrite model smooths the seams where the simplification removed text.

A *seam* is where a kept piece of the thought follows pieces that were dropped: "Alternatively, ..." after
the alternative it continued is gone, "Again, 42" after the first 42 went. For each seam the rewrite model
(any in-process generate backend: ``dlcot.rewrite.generate``) sees the kept paragraph before the seam and
the paragraph after it, and is asked for the paragraph after, changed as little as possible.

Nothing it writes is taken on trust:

- a seam's new paragraph is used only when it stays close to the original (``min_similarity``) and keeps
  every number and formula character of it; otherwise that seam stays verbatim;
- the rewritten thought is used only when all changes together stay within ``edit_budget`` of its
  characters, and the trace still verifies correct (the transform checks that); otherwise the verbatim
  simplification stays, and the record's lineage says why.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from longcot.dlcot.structure import Segment

PARAGRAPH = re.compile(r"\n[ \t]*\n")
_FENCE = re.compile(r"^```\w*\s*|\s*```$")
_LABEL = re.compile(r"^(?:rewritten|revised|after|paragraph)[^:\n]{0,30}:\s*", re.IGNORECASE)
_MATH_CHARS = re.compile(r"[\d=+\-*/^\\{}()\[\]<>]")

INSTRUCTION = (
    "Two paragraphs of a chain of reasoning follow. Text that stood between them was removed, so the second "
    "may now refer to something that is gone (\"Alternatively\", \"Again\", \"as before\", \"the other check\").\n"
    "Rewrite the SECOND paragraph so that it follows the FIRST naturally. Change as few words as possible: "
    "drop or adjust only the words that refer to the removed text, and keep every number, formula and step "
    "exactly as it is. Reply with the rewritten second paragraph and nothing else."
)


@dataclass(frozen=True)
class Seam:
    """A paragraph of the simplified thought that follows dropped text: ``[start, end)`` in that thought."""

    start: int
    end: int
    before: str  # the kept paragraph just before the seam


def seams(thought: str, segments: list[Segment]) -> list[Seam]:
    """The seams of the simplified thought that ``segments`` (of the original ``thought``) make."""
    out: list[Seam] = []
    new_text, gap = "", False
    for seg in sorted(segments, key=lambda s: s.start):
        if not seg.kept:
            gap = gap or bool(new_text.strip())
            continue
        piece = thought[seg.start : seg.end]
        if gap:
            body_start = len(new_text) + (len(piece) - len(piece.lstrip()))
            first = PARAGRAPH.search(new_text + piece, body_start)
            end = first.start() if first else len(new_text) + len(piece.rstrip())
            paragraphs = [p for p in PARAGRAPH.split(new_text) if p.strip()]
            if end > body_start and paragraphs:
                out.append(Seam(body_start, end, paragraphs[-1].strip()))
            gap = False
        new_text += piece
    return out


def rewrite_messages(before: str, after: str) -> list[dict]:
    return [{"role": "user", "content": f"{INSTRUCTION}\n\nFIRST:\n{before}\n\nSECOND:\n{after}"}]


def _clean(reply: str) -> str:
    text = _FENCE.sub("", reply.strip()).strip()
    text = _LABEL.sub("", text).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def acceptable(old: str, new: str, min_similarity: float) -> bool:
    """An edit that only smooths: one paragraph, close to the original, every number and formula character kept."""
    return (bool(new) and "\n\n" not in new and _MATH_CHARS.findall(old) == _MATH_CHARS.findall(new)
            and difflib.SequenceMatcher(None, old, new, autojunk=False).ratio() >= min_similarity)


def changed_share(old: str, new: str) -> float:
    """The share of ``old``'s characters that ``new`` replaces, deletes or inserts."""
    changed = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in
                  difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes() if tag != "equal")
    return changed / max(1, len(old))


def rewrite_thought(thought: str, found: list[Seam], engine, *, edit_budget: float, min_similarity: float,
                    max_new_tokens: int) -> tuple[str | None, dict]:
    """The thought with its seams smoothed by ``engine`` (``generate.backends.LocalEngine``), or None with the
    reason in the returned report when no edit can be used."""
    report: dict = {"seams": len(found), "edited": 0}
    if not found:
        return None, {**report, "fallback": "no seams: nothing was removed between kept paragraphs"}
    olds = [thought[s.start : s.end] for s in found]
    try:
        replies = engine.chat([rewrite_messages(s.before, old) for s, old in zip(found, olds)],
                              max_tokens=max_new_tokens, temperature=0.0)
    except Exception as exc:  # the rewrite model failing costs the rewrite, not the record
        return None, {**report, "fallback": f"rewrite model failed: {type(exc).__name__}: {exc}"[:300]}
    out, cursor, edited = [], 0, 0
    for seam, old, reply in zip(found, olds, replies):
        new = _clean(reply.text) if reply.finish_reason != "error" else ""
        smooths = new != old and acceptable(old, new, min_similarity)
        out += [thought[cursor : seam.start], new if smooths else old]
        edited += smooths
        cursor = seam.end
    new_thought = "".join(out) + thought[cursor:]
    share = changed_share(thought, new_thought)
    report.update(edited=edited, changed_share=round(share, 4))
    if not edited:
        return None, {**report, "fallback": "no seam edit was close enough to its paragraph"}
    if share > edit_budget:
        return None, {**report, "fallback": f"the edits change {share:.1%} of the thought, over the budget of "
                                            f"{edit_budget:.0%}"}
    return new_thought, report
