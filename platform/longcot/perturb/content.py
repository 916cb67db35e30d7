"""Content perturbations: change what the steps say, keep how the trace is laid out.

Each function takes the text, the ratio and a seeded ``random.Random`` and returns the new text with
the list of ``Edit``s that turn the old text into the new one, so the lineage can record exactly what
changed and a test can undo it. Nothing outside an edit's span changes.
"""

from __future__ import annotations

import re
from random import Random
from typing import Callable, NamedTuple, Sequence

from longcot.errors import RejectRow
from longcot.traces import last_boxed
from longcot.verify.math import answers_match

NUMBER = re.compile(r"\d+(?:\.\d+)?")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Punctuation that belongs to a removed keyword ("Wait," "Hmm..." "Let me check:"), then the spaces after it.
_KEYWORD_TAIL = r"(?:\.\.\.|…|[,.;:!?])?[ \t]*"


class Edit(NamedTuple):
    """``old`` at offset ``start`` of the input text became ``new`` (in the lineage: ``[start, old, new]``)."""

    start: int
    old: str
    new: str


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """``text`` with non-overlapping ``edits`` applied (offsets refer to ``text``)."""
    parts, pos = [], 0
    for edit in sorted(edits, key=lambda e: e.start):
        if edit.start < pos or text[edit.start : edit.start + len(edit.old)] != edit.old:
            raise ValueError(f"edit at {edit.start} does not match the text")
        parts.append(text[pos : edit.start])
        parts.append(edit.new)
        pos = edit.start + len(edit.old)
    parts.append(text[pos:])
    return "".join(parts)


def undo_edits(text: str, edits: Sequence[Edit]) -> str:
    """The input text back from the output of ``apply_edits`` (offsets are shifted as edits resize)."""
    shift = 0
    inverse = []
    for edit in sorted(edits, key=lambda e: e.start):
        inverse.append(Edit(edit.start + shift, edit.new, edit.old))
        shift += len(edit.new) - len(edit.old)
    return apply_edits(text, inverse)


def _different_integer(old: str, rng: Random, max_number: int) -> str:
    value = float(old)
    while True:
        new = rng.randint(0, max_number)
        if new != value:
            return str(new)


def corrupt_digits(text: str, ratio: float, rng: Random, max_number: int = 9) -> tuple[str, list[Edit], int]:
    """Replace each number of ``text`` (``12``, ``3.5``), with probability ``ratio``, by a different random
    integer in ``0..max_number``. Returns ``(new_text, edits, numbers_seen)``."""
    return _edit_matches(text, NUMBER, ratio, rng, lambda old: _different_integer(old, rng, max_number))


def _edit_matches(text: str, pattern: re.Pattern, ratio: float, rng: Random,
                  new: Callable[[str], str]) -> tuple[str, list[Edit], int]:
    """Each match of ``pattern``, with probability ``ratio``, replaced by ``new(match)``; ``(text, edits, matches)``."""
    matches = list(pattern.finditer(text))
    edits = [Edit(m.start(), m.group(0), new(m.group(0))) for m in matches if rng.random() < ratio]
    return apply_edits(text, edits), edits, len(matches)


def keyword_pattern(keywords: Sequence[str]) -> re.Pattern:
    """Whole-word, case-sensitive match of any keyword (longest first), with its trailing punctuation."""
    ordered = sorted(set(keywords), key=len, reverse=True)
    alternatives = "|".join(re.escape(k) for k in ordered)
    return re.compile(rf"(?<![A-Za-z])(?:{alternatives})(?![A-Za-z]){_KEYWORD_TAIL}")


def remove_keywords(text: str, ratio: float, rng: Random, keywords: Sequence[str]) -> tuple[str, list[Edit], int]:
    """Remove each occurrence of a reflection keyword, with probability ``ratio``.

    The removed span is the keyword plus the punctuation right after it and the spaces that follow
    ("Wait, so" -> "so"). Returns ``(new_text, edits, occurrences_seen)``.
    """
    return _edit_matches(text, keyword_pattern(keywords), ratio, rng, lambda old: "")


def final_answer_spans(text: str) -> tuple[str, list[int]] | None:
    """The final answer (last ``\\boxed{}``) and the offsets of every box that states exactly it."""
    answer = last_boxed(text)
    if answer is None or not answer.strip():
        return None
    starts = [m.end() for m in _BOX_OPEN.finditer(text) if text.startswith(answer + "}", m.end())]
    return (answer, starts) if starts else None


def wrong_answer_for(answer: str, reference: str | None, rng: Random, donor_answers: Sequence[str]) -> str:
    """An answer that math-verify does not accept for ``reference``.

    One number of ``answer`` is moved by a small offset when it has numbers; otherwise (or when that keeps
    matching) another record's reference answer is taken. Raises ``RejectRow`` when neither works.
    """
    truth = reference if reference is not None else answer
    numbers = list(NUMBER.finditer(answer))
    for _ in range(8 if numbers else 0):
        match = rng.choice(numbers)
        value = float(match.group(0))
        offset = rng.choice([-3, -2, -1, 1, 2, 3])
        new_value = value + offset if value + offset >= 0 else value + abs(offset)
        whole = new_value == int(new_value) and "." not in match.group(0)
        new_number = str(int(new_value)) if whole else str(new_value)
        candidate = answer[: match.start()] + new_number + answer[match.end() :]
        if not answers_match(candidate, truth):
            return candidate
    others = [a for a in donor_answers if a and a.strip() and a != answer]
    rng.shuffle(others)
    for candidate in others[:20]:
        if not answers_match(candidate, truth):
            return candidate
    raise RejectRow(f"cannot make a wrong answer for {answer!r}")


def replace_final_answer(
    text: str, reference: str | None, rng: Random, donor_answers: Sequence[str] = ()
) -> tuple[str, list[Edit], str]:
    """Replace the final answer in every ``\\boxed{}`` that states it by a wrong one.

    Returns ``(new_text, edits, new_answer)``; a text without a boxed final answer is rejected.
    """
    found = final_answer_spans(text)
    if found is None:
        raise RejectRow("no \\boxed{} final answer to replace")
    answer, starts = found
    new_answer = wrong_answer_for(answer, reference, rng, donor_answers)
    edits = [Edit(start, answer, new_answer) for start in starts]
    return apply_edits(text, edits), edits, new_answer
