"""Multiple choice (GPQA style): find the letter a response chose and compare it with the reference letter."""

from __future__ import annotations

import re

from longcot.traces import last_boxed

_WRAPPED = re.compile(r"^\s*(?:\\text\{\s*)?\(?\s*([A-J])\s*\)?(?:\s*\})?\s*[.:]?\s*$")
# "answer is (C)", "Answer: C", "option (C)", "choice C", "the correct option is (C) Plane"
_STATED = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:|would be|should be)?\s*[:\s]*\**\s*\(?([A-J])\)?(?![A-Za-z])",
    re.IGNORECASE,
)
_STANDALONE = re.compile(r"(?:^|\n)\s*\**\(?([A-J])\)?\**[.:)]?\s*(?:\n|$)")


def choice_letter(answer: str | None) -> str | None:
    """The letter when ``answer`` is just a choice: ``C``, ``(C)``, ``\\text{(C)}``, ``C.``; else None."""
    if answer is None:
        return None
    match = _WRAPPED.match(answer)
    return match.group(1).upper() if match else None


def extract_choice(text: str | None) -> str | None:
    """The letter a response chose: a boxed letter, else "answer is (X)", else a letter alone on the last line."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        letter = choice_letter(boxed) or choice_letter(re.sub(r"^\s*\\text\{(.*)\}\s*$", r"\1", boxed))
        if letter:
            return letter
        leading = re.match(r"\s*\(?([A-J])\)", boxed)  # \boxed{(C) Plane}
        if leading:
            return leading.group(1)
    stated = [m for m in _STATED.finditer(text) if m.group(1).isupper()]
    if stated:
        return stated[-1].group(1)
    alone = _STANDALONE.findall(text[-300:])
    return alone[-1] if alone else None


def letters_match(predicted: str | None, reference: str | None) -> bool:
    left, right = choice_letter(predicted), choice_letter(reference)
    return left is not None and left == right
