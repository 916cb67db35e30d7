"""Dangling references: kept text that points at text the simplification dropped.

"Given that, and the verification with n = 3, I think a_2023 = -1 is correct" reads as nonsense once the
n = 3 check is gone: the student learns to cite work it never did. A kept passage refers back when it says

- that something was checked ("as verified above", "the check with n = 3", "my earlier verification"): it
  dangles when no kept check comes before it while a dropped one does, or when a value its sentence names
  ("n = 3") is in a dropped check and in no kept text before it;
- that a value or result came earlier ("as I calculated earlier", "as established", "the same answer as
  before"): it dangles when a value of its sentence (a number, a formula) is in dropped text before it and
  in no kept text before it;
- that several methods agree ("confirmed through multiple methods", "both approaches"): it dangles when
  fewer than two approaches and checks are kept before it.

``resolve`` then makes the kept text refer to nothing dropped: a kept check that dangles gives its place to
the next check by ``simplify.check_rank`` that does not; any other dangling reference brings back the
dropped approach or check it points at. What could not be resolved is counted, never hidden.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from longcot.dlcot.structure import Segmentation, squash

CHECKED = re.compile(
    r"\bas (?:i |we )?(?:verified|checked|confirmed|tested|double-checked)(?: (?:above|earlier|before|previously))?\b|"
    r"\b(?:the|my|our) (?:earlier |previous |first |other )?(?:check|verification|test) (?:with|for|of|using|where|when)\b|"
    r"\b(?:the|my|our) (?:earlier|previous|other|first) (?:check|checks|verification|verifications)\b",
    re.IGNORECASE,
)
RECALLED = re.compile(
    r"\bas (?:i |we )?(?:calculated|computed|found|got|had|showed|shown|established|derived|mentioned|noted|saw|"
    r"seen|determined)(?: (?:above|earlier|before|previously))?\b|\bas (?:before|earlier|above)\b|"
    r"\bsame (?:answer|result|value) as (?:before|earlier|above)\b|"
    r"\b(?:matches|agrees with) (?:my|the|our) (?:earlier|previous|first|other) (?:calculation|result|answer|value|work)",
    re.IGNORECASE,
)
SEVERAL = re.compile(
    r"\b(?:both|multiple|several|different|various|all (?:the |three |these |of the )?|two|three) "
    r"(?:methods|approaches|ways|checks|verifications)\b",
    re.IGNORECASE,
)
REFERENCES = (("checked", CHECKED), ("recalled", RECALLED), ("several", SEVERAL))
METHODS = ("exploration", "verification")  # the pieces that work the problem: approaches and checks
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_MATH = re.compile(r"\\\((.+?)\\\)|\$([^$]+)\$|\\\[(.+?)\\\]", re.DOTALL)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:/\d+)?(?![\w])")


@dataclass(frozen=True)
class Dangling:
    """One reference of kept text to dropped text."""

    at: int  # offset of the referring phrase in the thought
    phrase: str
    kind: str  # checked | recalled | several
    where: str  # the kept piece holding it: "verification unit 2", "conclusion", ...
    points_at: str  # what it points at that is gone


_EQUATION = re.compile(r"\b[A-Za-z]\w{0,3}\s*=\s*-?\d+(?:\.\d+)?\b")


def _anchors(sentence: str, phrase: str) -> list[str]:
    """What a sentence names that a reference in it says came earlier: its math spans, its short equations
    ("n = 3") and its numbers."""
    rest = sentence.replace(phrase, " ")
    values = [next(g for g in m.groups() if g) for m in _MATH.finditer(rest)]
    values += _EQUATION.findall(rest)
    values += _NUMBER.findall(_EQUATION.sub(" ", _MATH.sub(" ", rest)))
    return [v for v in map(squash, values) if v]


def _present(anchor: str, text: str) -> bool:
    """Whether ``anchor`` stands in ``text`` (whitespace removed): a number as a whole number, not as a digit of
    another ("3" is not in "2023")."""
    if re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?", anchor):
        return re.search(r"(?<![\w.])" + re.escape(anchor) + r"(?![\w]|\.\d)", text) is not None
    return anchor in text


def _name(kind: str, piece) -> str:
    return getattr(piece, "name", kind)  # a Span is named by its kind


def dangling(seg: Segmentation) -> list[Dangling]:
    """Every reference of kept text to dropped text, in text order (see the module docstring)."""
    thought = seg.thought
    pieces = list(seg.pieces())
    squashed = {p: squash(thought[p.start : p.end]) for _, p in pieces}  # each piece, whitespace removed
    found: list[Dangling] = []
    for kind, piece in pieces:
        if not piece.kept:
            continue
        text = thought[piece.start : piece.end]
        before = [(k, p) for k, p in pieces if p.end <= piece.start]
        dropped_before = [(k, p) for k, p in before if not p.kept]
        if not dropped_before:
            continue
        kept_text = "".join(squashed[p] for _, p in before if p.kept)
        dropped_text = "".join(squashed[p] for _, p in dropped_before)
        methods = [p for k, p in before if k in METHODS and p.kept] + ([piece] if kind in METHODS else [])
        gone_methods = [(k, p) for k, p in dropped_before if k in METHODS]
        gone_checks = [p for k, p in gone_methods if k == "verification"]
        checks_kept = any(k == "verification" and p.kept for k, p in before)

        def points_at(reference: str, match) -> str | None:
            """What the reference ``match`` points at that is gone, or None when it does not dangle."""
            if reference == "several":
                return _name(*gone_methods[-1]) if len(methods) < 2 and gone_methods else None
            # the dropped piece holding a value the reference's sentence names but no kept text before has
            sentence = next((s for s in _SENTENCE.split(text) if match.group(0) in s), text)
            for anchor in _anchors(sentence, match.group(0)):
                if _present(anchor, dropped_text) and not _present(anchor, kept_text):
                    for k, p in reversed(dropped_before):
                        if _present(anchor, squashed[p]):
                            return _name(k, p)
            return gone_checks[-1].name if reference == "checked" and gone_checks and not checks_kept else None

        for reference, pattern in REFERENCES:
            for m in pattern.finditer(text):
                target = points_at(reference, m)
                if target is not None:
                    found.append(Dangling(piece.start + m.start(), m.group(0), reference, _name(kind, piece), target))
    return sorted(found, key=lambda d: d.at)


def resolve(seg: Segmentation, rank) -> tuple[Segmentation, list[str]]:
    """``seg`` with no kept text referring to dropped text where that can be arranged, and one line per change.

    ``rank(unit, position)`` orders verification units as the simplification does (``simplify.check_rank``).
    A kept unit whose reference dangles is swapped for the next unit by rank whose references do not; any
    other reference brings back the approach or unit it points at (never more than the members there are).
    """
    changes: list[str] = []
    for _ in range(len(seg.members()) + 1):
        found = dangling(seg)
        if not found:
            break
        seg, line = _swap_unit(seg, found[0], rank) or _restore(seg, found[0])
        if line is None:
            break
        changes.append(line)
    return seg, changes


def _swap_unit(seg: Segmentation, ref: Dangling, rank) -> tuple[Segmentation, str] | None:
    units = list(seg.units)
    holder = next((u for u in units if u.kept and u.start <= ref.at < u.end), None)
    if holder is None:
        return None
    for k in sorted(range(len(units)), key=lambda k: rank(units[k], k)):
        candidate = units[k]
        if candidate.kept or not candidate.correct or candidate.label != "confirm":  # never the holder: it is kept
            continue
        trial = [replace(u, kept=False, reason=f"refers to dropped text ({ref.phrase!r}); verification unit "
                                                f"{candidate.index} is kept instead") if u is holder else
                 replace(u, kept=True, reason=None) if u is candidate else u for u in units]
        swapped = replace(seg, units=tuple(trial))
        if not any(d.where == candidate.name for d in dangling(swapped)):
            return swapped, (f"{holder.name} referred to dropped text ({ref.phrase!r}): {candidate.name} kept "
                             "instead")
    return None


def _restore(seg: Segmentation, ref: Dangling) -> tuple[Segmentation, str | None]:
    """Bring back the member ``ref`` points at."""
    members = seg.members()
    target = next((m for m in members if not m.kept and ref.points_at == m.name), None)
    if target is None:
        return seg, None
    out = [replace(m, kept=True, reason=None) if m is target else m for m in members]
    return seg.with_members(out), f"{ref.where} refers to {ref.points_at} ({ref.phrase!r}): {ref.points_at} kept"
