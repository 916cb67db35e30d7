"""Math answers: extract the final answer of a response and check it against a reference with math-verify.

These are the in-process building blocks. ``longcot.verify`` runs them in a process pool with a
per-item timeout, because math-verify can take unbounded time on pathological inputs.
"""

from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:)\s*[:\s]*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.IGNORECASE | re.MULTILINE
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced; None if absent."""
    found = None
    for match in _BOXED.finditer(text):
        pos = match.end()
        if pos < len(text) and text[pos] == "{":
            depth, i = 0, pos
            while i < len(text):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        found = text[pos + 1 : i]
                        break
                i += 1
        elif pos < len(text):  # "\boxed 5"
            token = re.match(r"[^\s$]+", text[pos:])
            if token:
                found = token.group(0)
    return found


def extract_answer(text: str | None) -> str | None:
    """The final answer of a response: the last ``\\boxed{}``, else "the answer is X", else the last number."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    said = _ANSWER_IS.findall(text)
    if said:
        return said[-1].strip()
    numbers = _NUMBER.findall(text[-2000:])
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Whether ``predicted`` equals ``reference`` mathematically (math-verify), e.g. ``1/2`` and ``0.5``.

    In-process and without a timeout: call it through the verify pool for untrusted input.
    """
    if predicted is None or reference is None:
        return False
    if predicted.strip() == reference.strip():
        return True
    from math_verify import parse, verify

    gold = _parse_wrapped(parse, reference)
    pred = _parse_wrapped(parse, predicted)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred))


def _parse_wrapped(parse, text: str):
    # math-verify finds answers in LaTeX environments; wrapping a bare answer lets it parse "\frac{1}{2}" too.
    parsed = parse(f"${text}$", parsing_timeout=None)
    return parsed or parse(text, parsing_timeout=None)
