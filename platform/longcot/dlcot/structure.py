"""The structure of a long chain of thought, as DLCoT sees it.

A thought is cut into macro segments, in order, each a verbatim slice of it:

- ``restatement``: the problem restated;
- ``understanding``: the first high-level analysis (optional);
- ``exploration``: everything up to the first final answer, split into ``Approach``es;
- ``verification``: every check and alternative after the first answer, split into ``VerificationUnit``s
  (optional);
- ``conclusion``: the closing statement with the answer.

Offsets are character offsets into the original thought, end exclusive. The pieces of a ``Segmentation``
tile the thought (every character belongs to exactly one piece), so joining the kept ones in order gives
a text whose every character is verbatim from the original, in the original order.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from typing import ClassVar

KINDS = ("restatement", "understanding", "exploration", "verification", "conclusion")
ERROR_LABEL = "error"  # the label of a segment that is an erroneous span later corrected
# a value, an equation, LaTeX or arithmetic in words: a piece of the thought that does some work, not only
# talk about it ("Is there another way to confirm this?")
WORKING = re.compile(r"\d|=|\\[A-Za-z(\[]|\b(?:plus|minus|times|divided by|equals|squared|cubed)\b", re.IGNORECASE)
# a calculation: an equation, a fraction, an arithmetic operation between numbers
COMPUTATION = re.compile(r"=|\\frac|\d\s*[-+*/×÷^]\s*\(?\d")
# a calculation carried out (a fraction alone is a number, "a · b divided by b · b" a formula): an equation
# between values, arithmetic on numbers in symbols or in words
CALCULATION = re.compile(
    r"[\w)\]}]\s*=\s*[-\w(\\$]|\d\s*[-+*×÷^·]\s*\(?-?\d|\d\s*/\s*\d+\s*[-+*×÷^·]|"
    r"\b\d+(?:\.\d+)?\s+(?:times|divided by|plus|minus|multiplied by|over)\s+-?\d|"
    r"\b(?:squaring|cubing|dividing|multiplying|adding|subtracting|plugging|substituting)\b[^.\n]{0,40}\d|"
    r"\d[^.\n]{0,40}\b(?:gives|equals|is equal to|comes to|yields)\b[^.\n]{0,20}\d",
    re.IGNORECASE,
)


def squash(text: str) -> str:
    """``text`` without whitespace: passages compare equal whatever their spacing and line breaks."""
    return re.sub(r"\s+", "", text)


@dataclass(frozen=True)
class ErrorSpan:
    """A wrong step inside an approach or unit, later corrected; ``removed`` once error optimisation drops it."""

    start: int
    end: int
    removed: bool = False


@dataclass(frozen=True)
class Approach:
    """One attempt at the problem inside exploration: a method, followed until it gives up or answers.

    ``label`` comes from its own last stated answer checked against the reference: ``correct``,
    ``incorrect`` (an answer that does not match) or ``incomplete`` (no answer).
    """

    index: int  # 1-based, in order
    start: int
    end: int
    answer: str | None = None
    label: str = "incomplete"
    cluster: int | None = None
    errors: tuple[ErrorSpan, ...] = ()
    kept: bool = True
    reason: str | None = None

    @property
    def correct(self) -> bool:
        return self.label == "correct"

    @property
    def name(self) -> str:
        return f"approach {self.index}"


@dataclass(frozen=True)
class VerificationUnit:
    """One check or alternative after the first answer: it ``confirm``s the answer or finds a ``fault``.

    ``answer`` is what the unit arrives at (its own stated answer, else the answer it checks) and
    ``correct`` whether that matches the reference. A unit that is not an ``alternative`` re-checks the
    work that produced its answer: it follows that work's method.
    """

    index: int  # 1-based, in order
    start: int
    end: int
    label: str = "confirm"
    answer: str | None = None
    correct: bool = False
    alternative: bool = False  # it solves the problem another way, rather than re-checking the work
    cluster: int | None = None
    errors: tuple[ErrorSpan, ...] = ()
    kept: bool = True
    reason: str | None = None

    @property
    def name(self) -> str:
        return f"verification unit {self.index}"


@dataclass(frozen=True)
class Segment:
    """One verbatim slice of the thought, as stored in the record's ``segments`` field."""

    kind: str
    start: int
    end: int
    approach: int | None = None
    cluster: int | None = None
    label: str | None = None
    kept: bool = True
    reason: str | None = None


@dataclass(frozen=True)
class Span:
    """A macro segment without inner structure (restatement, understanding, conclusion): always kept."""

    start: int
    end: int
    kept: ClassVar[bool] = True


@dataclass(frozen=True)
class Segmentation:
    """A thought cut into its structure. Pieces are in order and tile ``[0, len(thought))``."""

    thought: str
    restatement: Span | None
    understanding: Span | None
    approaches: tuple[Approach, ...]
    units: tuple[VerificationUnit, ...]
    conclusion: Span | None
    segmenter: str = "rules"
    fallback: str | None = None  # why the rules segmented a thought meant for the judge

    def members(self) -> list[Approach | VerificationUnit]:
        """Approaches then verification units, in text order: what clustering and simplification act on."""
        return [*self.approaches, *self.units]

    def first_correct(self) -> int | None:
        """Position in ``members()`` of the first approach or unit that reaches the reference answer."""
        return next((position for position, member in enumerate(self.members()) if member.correct), None)

    def with_members(self, members: list[Approach | VerificationUnit]) -> "Segmentation":
        approaches = tuple(m for m in members if isinstance(m, Approach))
        units = tuple(m for m in members if isinstance(m, VerificationUnit))
        return replace(self, approaches=approaches, units=units)

    def segments(self) -> list[Segment]:
        """The record's ``segments``: every piece in order, approaches and units split at their error spans."""
        out: list[Segment] = []
        for kind, piece in self.pieces():
            if isinstance(piece, Span):
                out.append(Segment(kind, piece.start, piece.end, label=None, kept=True))
                continue
            label = piece.label
            cursor = piece.start
            for err in sorted(piece.errors, key=lambda e: e.start):
                if err.start > cursor:
                    out.append(Segment(kind, cursor, err.start, piece.index, piece.cluster, label, piece.kept, piece.reason))
                kept = piece.kept and not err.removed
                reason = piece.reason if not piece.kept else ("erroneous span removed" if err.removed else None)
                out.append(Segment(kind, err.start, err.end, piece.index, piece.cluster, ERROR_LABEL, kept, reason))
                cursor = err.end
            if piece.end > cursor:
                out.append(Segment(kind, cursor, piece.end, piece.index, piece.cluster, label, piece.kept, piece.reason))
        return out

    def pieces(self) -> list[tuple[str, Span | Approach | VerificationUnit]]:
        """``(kind, piece)`` of every macro segment and member, in text order."""
        by_kind = zip(KINDS, [(self.restatement,), (self.understanding,), self.approaches, self.units,
                              (self.conclusion,)])
        return [(kind, piece) for kind, pieces in by_kind for piece in pieces if piece]


def reassemble(thought: str, segments: list[Segment]) -> str:
    """The kept segments joined in their original order: every character verbatim from ``thought``."""
    ordered = sorted(segments, key=lambda s: s.start)
    return "".join(thought[s.start : s.end] for s in ordered if s.kept)


@dataclass(frozen=True)
class SegmentationCheck:
    """The released DLCoT code's test that a segmentation reproduces its source text."""

    passed: bool
    quick_ratio: float
    jaccard: float


def check_segmentation(original: str, pieces: list[str], *, min_ratio: float = 0.90,
                       min_jaccard: float = 0.95) -> SegmentationCheck:
    """Joined ``pieces`` against ``original``: SequenceMatcher quick_ratio >= ``min_ratio`` or word-set
    Jaccard >= ``min_jaccard`` passes."""
    joined = "".join(pieces)
    ratio = difflib.SequenceMatcher(None, joined, original, autojunk=False).quick_ratio()
    a, b = set(joined.split()), set(original.split())
    jaccard = len(a & b) / len(a | b) if (a or b) else 1.0
    return SegmentationCheck(ratio >= min_ratio or jaccard >= min_jaccard, round(ratio, 4), round(jaccard, 4))
