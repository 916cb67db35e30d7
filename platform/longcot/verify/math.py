"""Math answers: find the final answer of a response and check it against a reference with math-verify.

These are the in-process building blocks. ``longcot.verify.verdicts`` runs the math-verify part in a
process pool with a per-item timeout (``CheckPool``), because math-verify can take unbounded time on
pathological inputs. ``check_pair`` is the function the pool's workers run.

Where the final answer comes from (``final_answer``): the solution section when it yields one, else the
thought (the whole response when it has no markers). Within one: its last ``\\boxed{}``; else the later of
an answer phrase ("the answer is X", "Final Answer: X") and the value its concluding sentence states
("Therefore, the height is 5 cm."). A region cut off at the token limit answers only with ``\\boxed{}``:
whatever else it says is reasoning still under way, not an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise, takewhile

from longcot.traces import last_boxed

# "final answer is X", "**Final Answer**\n\n X", "the answer is X", "Answer: X" (the last one wins)
_PHRASE = re.compile(
    r"\bfinal answer\b\s*(?:is|:|=|should be|would be|must be)"
    r"|\bfinal answer\b\**\s*:?\s*\n"
    r"|\b(?:the|my) (?:correct |final )?answer\s+(?:is|should be|would be|must be)\b"
    r"|\banswer\s*:",
    re.IGNORECASE,
)
# $...$ whose content neither starts nor ends with a space ("$93 - $15" is money, not math), \(..\), \[..\]
_MATH_SPANS = re.compile(
    r"\$\$(.+?)\$\$|\$(?!\s)((?:[^$\\]|\\.)+?)(?<!\s)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL
)
_WORDS_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")  # \text{Navin}
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\n\s*\n|\s*$)", re.DOTALL)  # from and to a non-space, up to a blank line
# up to a sentence end: [.!?], then space and what opens a sentence ("42! is 9" is one sentence)
_SENTENCE = re.compile(r"\S.*?(?=(?<=[.!?])\s+[A-Z\\$(\[*]|\Z)", re.DOTALL)
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
MAX_PHRASE_ANSWER = 200  # characters: longer "answers" after a phrase are prose, not an answer
TAIL_CHARS = 20_000  # phrases and concluding sentences are looked for in a region's last characters only


@dataclass(frozen=True)
class Answer:
    """An extracted final answer and how it was found: boxed | phrase | conclusion (None: no answer)."""

    text: str | None
    how: str | None = None


def phrase_answer(text: str) -> str | None:
    """The answer after the last "final answer is" / "the answer is" / "Answer:" phrase, or None."""
    found = _phrase_answer(text)
    return found[0] if found else None


def _phrase_answer(text: str) -> tuple[str, int] | None:
    for match in reversed(list(_PHRASE.finditer(text))):
        found = _answer_after(text, match.end())
        if found:
            return found, match.start()
    return None


def _answer_after(text: str, pos: int) -> str | None:
    rest = text[pos : pos + 2 * MAX_PHRASE_ANSWER + 20]
    rest = rest.lstrip(" \t*:")
    if rest.startswith("\n"):  # "**Final Answer**\n\n\[ ... \]": the answer may sit on the next lines
        rest = rest.lstrip("\n \t*:")
    if not rest or rest[0] in ".,;!?":
        return None
    boxed = last_boxed(rest.split("\n\n")[0])
    if boxed is not None and boxed.strip():
        return boxed.strip()
    span = _MATH_SPANS.match(rest)
    if span:
        answer = span.group(span.lastindex)  # the one alternative that matched
    else:
        sentence = re.match(r"(.+?)(?:\.\s|\.$|\n|$)", rest, re.DOTALL)
        if not sentence:
            return None
        answer = sentence.group(1)
    answer = answer.strip().rstrip(".,;").strip("* ")
    if not answer or len(answer) > MAX_PHRASE_ANSWER:
        return None
    if len(answer.split()) > 3 and not _MATH_SPANS.search(answer):  # prose: "three boxes contain neither ..."
        return _first_value(answer) or (answer if len(answer.split()) <= 12 else None)
    return answer


def _first_value(prose: str) -> str | None:
    first = prose.split()[0].lower().strip(".,")
    if first in _NUMBER_WORDS:
        return _NUMBER_WORDS[first]
    values = _values(prose)
    return values[0][0] if values else None


def concluding_answer(text: str) -> str | None:
    """The value the concluding sentence states ("... the height is 5 cm."), from the last two paragraphs."""
    found = _concluding_answer(text)
    return found[0] if found else None


def _concluding_answer(text: str) -> tuple[str, int] | None:
    """``(value, offset)`` of the concluding statement of ``text``.

    The sentence is the last one with a value among the last two paragraphs, preferring one with a
    concluding cue ("therefore", "answer", "final", ...): a closing "everything checks out: 280 - 48 = 232"
    is a check, not the answer. Inside it, the value after its last "is" / "=" / ":" (several joined by
    "and" are a list), or the value before "is the correct ..."; else its last value.
    """
    candidates = []
    for paragraph in list(_PARAGRAPH.finditer(text))[-2:]:
        for sentence in _SENTENCE.finditer(paragraph.group(0)):
            values = _values(sentence.group(0))
            if values:
                candidates.append((paragraph.start() + sentence.start(), sentence.group(0), values))
    if not candidates:
        return None
    cued = [c for c in candidates if _CUE.search(c[1])]
    start, sentence, values = (cued or candidates)[-1]
    value, at = _stated_value(sentence, values)
    return value, start + at


_CUE = re.compile(r"\b(?:therefore|thus|hence|answer|final|solution|result|conclu\w*)\b", re.IGNORECASE)
_STATE_WORD = re.compile(r"\b(?:is|are|was|equals|be|gives)\b|:")
_SELF_REFERENCE = re.compile(r"\s*(?:indeed\s+)?(?:the|my|our)?\s*(?:correct|right|final|exact|answer|solution)\b",
                             re.IGNORECASE)
_OPERATORS = {"=", "+", "-", "*", "/", "×", "·", "^", "±", "<", ">", "≤", "≥", "\\pm", "\\cdot", "\\times"}
_MATHY = re.compile(r"\$?[-+(\[]*(?:[\d.,/^*()\[\]{}_√π'+=\-]*\d[\w.,/^*()\[\]{}_√π'+=\-]*|√\w+|π)")
_VARIABLE = re.compile(r"[a-zA-Z](?:_\w+)?(?:\^\w+)?|[a-zA-Z]\([^()\s]*\)")


def _stated_value(sentence: str, values: list[tuple[str, int, int]]) -> tuple[str, int]:
    masked = _mask_spans(sentence)
    states = list(_STATE_WORD.finditer(masked))
    if states:
        last = states[-1]
        if _SELF_REFERENCE.match(masked, last.end()):  # "326.5 is the correct sum"
            before = [v for v in values if v[2] <= last.start()]
            if before:
                return before[-1][0], before[-1][1]
        after = [v for v in values if v[1] >= last.end()]
        if after:  # "x = 2 and x = -2": every value of the list
            joined = takewhile(lambda pair: re.fullmatch(r"[\s,]*(?:and|or)?[\s,]*", masked[pair[0][2] : pair[1][1]]),
                               pairwise(after))
            listed = [after[0], *(value for _, value in joined)]
            return ", ".join(v[0] for v in listed), listed[0][1]
    return values[-1][0], values[-1][1]


def _mask_spans(sentence: str) -> str:
    return _MATH_SPANS.sub(lambda m: " " * len(m.group(0)), sentence)


def _values(sentence: str) -> list[tuple[str, int, int]]:
    """``(value, start, end)`` of each math span (right-hand side of an equation) and each plain-text math run."""
    spans = ((_right_hand_side(m.group(m.lastindex)), m.start(), m.end()) for m in _MATH_SPANS.finditer(sentence))
    values = [span for span in spans if span[0]]
    masked = _mask_spans(sentence)
    run: list[tuple[str, int, int]] = []
    for m in re.finditer(r"\S+", masked):
        token = m.group(0)
        core = token.rstrip(".,;:!?")
        mathy = core and (_MATHY.fullmatch(core) or core in _OPERATORS or _VARIABLE.fullmatch(core))
        if mathy:
            run.append((core, m.start(), m.start() + len(core)))
        if run and (not mathy or core != token):
            values.extend(_run_value(masked, run))
            run = []
    if run:
        values.extend(_run_value(masked, run))
    return sorted(values, key=lambda v: v[1])


def _run_value(masked: str, run: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    start, end = run[0][1], run[-1][2]
    text = re.sub(r"\\?\$(?=\d)", "", masked[start:end].strip())  # money: $93 - $15 = $78
    if not re.search(r"\d|π|√", text):
        return []
    value = _right_hand_side(text)
    return [(value, start, end)] if value else []


def _right_hand_side(content: str) -> str:
    """``x = 5`` -> ``5``; an equation whose right side is 0 (``5x - 7y + 4 = 0``) stays whole."""
    if "=" not in content:
        return content.strip()
    rhs = content.split("=")[-1].strip()
    return content.strip() if rhs in ("0", "") else rhs


def answer_in(text: str, *, finished: bool) -> tuple[str, str] | None:
    """``(answer, how)`` from one region of a response, or None.

    The last ``\\boxed{}`` wins; else the later of an answer phrase and a concluding sentence. An unfinished
    region (cut off at the token limit) answers only with ``\\boxed{}``: anything else it "states" is a
    step of reasoning that was still going on.
    """
    if not text.strip():
        return None
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    if not finished:
        return None
    tail = text[-TAIL_CHARS:]  # a final answer is stated at the end; bounded work on a hostile response
    said = _phrase_answer(tail)
    stated = _concluding_answer(tail)
    if said and (not stated or said[1] >= stated[1]):
        return said[0], "phrase"
    if stated:
        return stated[0], "conclusion"
    return None


def final_answer(parsed) -> Answer:
    """The final answer of a parsed trace (``traces.ParsedTrace``); ``Answer(None)`` when it has none."""
    for text, finished in ((parsed.solution, not parsed.truncated), (parsed.thought, parsed.thought_closed)):
        found = answer_in(text, finished=finished)  # None for an empty region
        if found:
            return Answer(*found)
    return Answer(None)


def normalize_answer(text: str) -> str:
    """Light, semantics-free clean-up: math delimiters, ``\\text{}``/``\\mathrm{}`` wrappers of plain words,
    ``\\dfrac``, thousands separators (``5,850`` is 5850, not the set {5, 850}), a trailing period."""
    s = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
    s = s.rstrip(".").strip()
    if re.match(r"^\\?\$\s*\d", s):  # money: $78, \$32,348
        s = s.lstrip("\\$").strip()
    s = re.sub(r"√\s*(\w+)", r"\\sqrt{\1}", s).replace("π", "\\pi ").replace("×", "\\times ").replace("·", "\\cdot ")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\!", "")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    s = re.sub(r"(?<=\d)\\,(?=\d{3})", "", s)  # 5\,850
    return s


def _unwrapped(text: str) -> str:
    return _WORDS_WRAPPER.sub(r"\1", normalize_answer(text))


def _simple_form(text: str) -> str:
    return re.sub(r"\s+", "", _unwrapped(text).replace("\\left", "").replace("\\right", "")).lower()


def same_string(predicted: str, reference: str) -> bool:
    """Equal after clean-up and whitespace removal (the cheap check that needs no math-verify); a word
    answer (``\\text{Navin}``) also matches a sentence that starts with it ("Navin earns the most")."""
    pred, ref = _simple_form(predicted), _simple_form(reference)
    if pred == ref:
        return True
    words = _unwrapped(reference).strip()
    if re.fullmatch(r"[A-Za-z]{2,}[A-Za-z ]*", words):
        return _unwrapped(predicted).lower().split()[: len(words.split())] == words.lower().split()
    return False


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Whether ``predicted`` equals ``reference`` mathematically (math-verify), e.g. ``1/2`` and ``0.5``.

    In-process and without a timeout: call it through the verify pool (``match_answers``) for untrusted input.
    """
    if predicted is None or reference is None:
        return False
    return same_string(predicted, reference) or check_pair((predicted, reference))


def check_pair(pair: tuple[str, str]) -> bool:
    """The math-verify half of ``answers_match`` (the pool's ``math`` check: callers did the string checks):
    ``(predicted, reference)``, both parsed as LaTeX math, compared."""
    from math_verify import parse, verify

    predicted, reference = pair
    gold = _parse_wrapped(parse, normalize_answer(reference))
    pred = _parse_wrapped(parse, normalize_answer(predicted))
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


def _parse_wrapped(parse, text: str):
    # math-verify finds answers in LaTeX environments; wrapping a bare answer lets it parse "\frac{1}{2}" too.
    parsed = parse(f"${text}$", parsing_timeout=None)
    return parsed or parse(text, parsing_timeout=None)
