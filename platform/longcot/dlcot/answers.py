"""Intermediate answers: what a step of a thought states as its result, and whether it is the reference.

``stated_answers`` finds the answers a step commits to (``\\boxed{}``, "the answer is X", and the value a
concluding sentence lands on: "So f(-2) + f(-1) + f(0) = 14/3."). ``ReferenceMatcher`` checks them
against one reference answer: a cheap normal-form and exact-number comparison settles most of them
in-process; only the rest go to math-verify through the verify stage's timeout-safe checker, so a
pathological expression can stall nothing. Results are cached per candidate, since a trace restates the
same values many times.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Callable, Sequence

from longcot.traces import last_boxed
from longcot.verify.math import concluding_answer, normalize_answer, phrase_answer
from longcot.verify.mcq import choice_letter

# A batch of (candidate, reference) pairs -> True / False, or None when the check timed out or failed.
PairCheck = Callable[[Sequence[tuple[str, str]]], list[bool | None]]

_CONCLUDING = re.compile(
    r"\b(?:therefore|thus|hence|so|which (?:gives|means|is)|we (?:get|have|find|obtain)|answer|result|"
    r"equals?|is equal to|comes out to|simplifies to|gives|get|final)\b",
    re.IGNORECASE,
)
# a firm conclusion, not a "so" in passing: only then is a paragraph's last value read as its answer
_FIRM = re.compile(r"\b(?:therefore|thus|hence|answer|final|solutions? (?:is|are)|roots? (?:is|are))\b", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|should be|would be|:)\s*(.+)$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\$(])|\n+")
# The value a sentence lands on: what follows its last "=", "is", "are", "be", "to", ":" or "of".
_LINK = re.compile(r"=|≈|\b(?:is|are|be|to|equals|of)\b|:", re.IGNORECASE)
MAX_SENTENCE_CHARS = 400  # only a sentence's tail is read: bounded work on a pathological paragraph
_MATH_CHUNK = re.compile(r"\$\$?([^$]+)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
MAX_CANDIDATE_CHARS = 80
# a number standing alone in prose ("$10", "4 beakers", "1,000"), not a piece of a word, power or decimal, nor
# the base of a power ("(-1)^k")
_BARE_NUMBER = re.compile(r"(?<![\w.^_{\\])\$?(-?\d[\d,]*(?:\.\d+)?)(?![\w^_]|[.,]\d|\)\s*\^)")
MAX_PER_STEP = 3


def _strip_wrappers(text: str) -> str:
    for _ in range(3):
        text = text.strip().rstrip(".,;!?").strip()
        for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
            if text.startswith(a) and text.endswith(b) and len(text) > len(a) + len(b):
                text = text[len(a) : len(text) - len(b)]
    return text.strip()


def _rhs(math: str) -> str:
    """The right-hand side of the last top-level ``=`` or ``\\equiv`` of ``math`` (``x = 5`` -> ``5``,
    ``4 + 5 \\equiv 9 \\pmod{11}`` -> ``9 \\pmod{11}``; ``\\sum_{j=1}`` has none)."""
    depth, cut = 0, -1
    for i, ch in enumerate(math):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "=" and depth == 0 and not math[i - 1 : i] in ("<", ">", "!"):
            cut = i + 1
        elif ch == "\\" and depth == 0 and math.startswith("\\equiv", i):
            cut = i + len("\\equiv")
    return math[cut:] if cut >= 0 else math


_FILLER = re.compile(r"^(?:(?:indeed|also|just|exactly|actually|still|then|now|equal to|approximately|about|"
                     r"simply|clearly|precisely)\s+)+", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^-?\d[\d,]*(?:\.\d+)?(?=\s+[A-Za-z])")


def _plausible(value: str) -> str | None:
    """``value`` as a candidate answer, or None when it cannot be one: too long, no digit, symbol or single
    letter, unbalanced brackets (a cut-off piece of LaTeX), or prose ("a valid root")."""
    value = _FILLER.sub("", _strip_wrappers(value))
    number = _LEADING_NUMBER.match(value)
    if number and number.end() < len(value) and not re.search(r"[\\^_=+*/()]", value[number.end():]):
        value = number.group(0)  # "864 square inches", "17 apples": the number
    if not value or len(value) > MAX_CANDIDATE_CHARS or not re.search(r"[\d\\]|\b[a-zA-Z]\b|π|√|∞", value):
        return None
    if value.count("{") != value.count("}") or value.count("(") + value.count("[") != value.count(")") + value.count("]"):
        return None
    if re.search(r"[-+*/=^×]$", value) or re.match(r"^(?:[+*/=^×]|\\times|\\cdot)", value):
        return None  # a piece of a computation ("20 -", "\\times \\frac{1}{3}")
    if "\\" not in value and re.search(r"[A-Za-z]{3,}\s+[A-Za-z]{2,}", value):
        return None
    return value


def _sentence_values(sentence: str) -> list[str]:
    """The values a concluding sentence lands on: after "answer is", else the right-hand sides of its
    math spans, else what follows its last "=" / "is" / "are" / "to" / ":"."""
    said = _ANSWER_IS.search(sentence)
    if said:
        return [v for v in [_plausible(said.group(1))] if v]
    chunks = [next(g for g in m.groups() if g is not None) for m in _MATH_CHUNK.finditer(sentence)]
    found = [_plausible(_rhs(c)) for c in chunks[-2:]]
    links = list(_LINK.finditer(sentence))
    if links:  # the prose value ("the value of \\( x \\) is indeed 17")
        found.append(_plausible(_rhs(sentence[links[-1].end() :])))
    return [v for v in found if v]


def _last_value(sentence: str) -> str | None:
    """The last value a sentence names, wherever it stands: the right-hand side of its last math span, else
    its last bare number ("So, Pam pays $10 more than Susan." -> ``10``). None for a sentence that leads
    into what follows ("Then, divide both sides by 3:")."""
    if sentence.rstrip().endswith(":"):
        return None
    chunks = [next(g for g in m.groups() if g is not None) for m in _MATH_CHUNK.finditer(sentence)]
    if chunks:
        return _plausible(_rhs(chunks[-1]))
    numbers = _BARE_NUMBER.findall(sentence)
    return numbers[-1].replace(",", "") if numbers else None


def result_values(step: str) -> list[str]:
    """What ``step`` arrives at, read loosely: the values of its last sentence that lands on one (the
    right-hand side of an equation, "6 times 7 is 42 inches", a display ``\\[ x = 83 \\]``, "it would take 4
    beakers"), with or without a concluding word. Too loose to find answers in general (every computation
    lands on something); the rules segmenter asks it only of a paragraph that a check follows, whose result
    is what gets checked."""
    for sentence in reversed([s for s in _SENTENCE_END.split(step) if s.strip()]):
        sentence = sentence[-MAX_SENTENCE_CHARS:]
        found = _sentence_values(sentence)
        if not found:  # "there are 4 possible numbers that both could be thinking of": not after the last link
            tails = (_plausible(_rhs(sentence[link.end() :])) for link in reversed(list(_LINK.finditer(sentence))))
            value = next(filter(None, tails), None) or _last_value(sentence)
            found = [value] if value else []
        if found:
            return found[-MAX_PER_STEP:]
    return []


def stated_answers(step: str, lead_in: str | None = None) -> list[str]:
    """Answers ``step`` commits to, in order (at most ``MAX_PER_STEP``, the last ones): its last
    ``\\boxed{}``, the verify stage's answer phrase and concluding value, the values of its concluding
    sentences. A display-math paragraph introduced by a concluding ``lead_in`` ("Therefore, the sum is:")
    states the right-hand side of its last equation."""
    candidates = [last_boxed(step), phrase_answer(step)]
    body = step.strip()
    if lead_in and lead_in.rstrip().endswith(":") and _CONCLUDING.search(lead_in[-MAX_SENTENCE_CHARS:]):
        chunks = [next(g for g in m.groups() if g is not None) for m in _MATH_CHUNK.finditer(body)]
        if chunks:
            candidates.append(_rhs(chunks[-1]))
        elif len(body) <= MAX_CANDIDATE_CHARS:
            candidates.append(_rhs(body))
    for sentence in _SENTENCE_END.split(step):
        sentence = sentence[-MAX_SENTENCE_CHARS:]
        if _CONCLUDING.search(sentence):
            candidates += _sentence_values(sentence)
    if _FIRM.search(step) and len(step) <= 4 * MAX_SENTENCE_CHARS:
        candidates.append(concluding_answer(step))  # lists ("x = 5, x = 7, and x = 3"), "326.5 is the correct sum"
    found = dict.fromkeys(value for value in (_plausible(c) for c in candidates if c) if value)  # in order, once
    return list(found)[-MAX_PER_STEP:]


_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\quad|\\displaystyle|\s+|\^\{?\\circ\}?|°|\\%|%|\$")


def normal_form(answer: str) -> str:
    """A cheap canonical spelling (the verify stage's ``normalize_answer``, then spacing, ``\\left`` /
    ``\\right``, ``\\text{}``, degree signs, ``sqrt(5)``, ``_{8}`` and ``3*\\sqrt{2}`` spellings unified), so
    equal spellings compare equal without math-verify."""
    text = normalize_answer(_strip_wrappers(answer))
    text = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"(?<![\\A-Za-z])sqrt\s*\(([^()]*)\)", r"\\sqrt{\1}", text)
    text = re.sub(r"(?<=\d)\s*(?:\*|\\cdot|\\times|×)\s*(?=[A-Za-z\\])", "", text)
    text = re.sub(r"_\{(\w+)\}", r"_\1", text)
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", text)
    return _NOISE.sub("", text).rstrip(".")


_UNITS = re.compile(r"\\(?:text|mbox|mathrm)\{\s*[A-Za-z ]+\}(?:\^\{?\d\}?)?")
# a number with a plain unit after it, in normal form: "864in^2", "288cm³", "10dollars" (not "2x")
_PLAIN_UNIT = re.compile(
    r"^(-?\d+(?:\.\d+)?)(?:in|inch(?:es)?|ft|feet|foot|yd|yards?|mi|miles?|mm|cm|km|meters?|metres?|kg|grams?|"
    r"lbs?|pounds?|units?|degrees?|dollars?|cents?|sec|seconds?|min|minutes?|hours?|days?)(?:\^\{?[23]\}?|[²³])?$"
)
_NAMED_VALUE = re.compile(r"^[A-Za-z](?:_\w+)?(?:=|\\in)(.+)$")  # x=5, x\in[-2,7]
_MATRIX = re.compile(r"\\begin\{[pbv]?matrix\}(.*)\\end\{[pbv]?matrix\}")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_LEADING_CHOICE = re.compile(r"^\s*(?:\\text\{\s*)?\(([A-J])\)(?![A-Za-z])")
_OPERATION = re.compile(r"[\d)}]\s*(?:[-+*/^×÷]|\\times|\\cdot|\\div)\s*[\d(\\{]")
_IRRATIONAL = re.compile(r"\\(?:sqrt|pi|log|ln|sin|cos|tan|cot|sec|csc|infty)|\^\{?[-\d]*\.|\be\b")
_RELATION = re.compile(r"<|>|\\[lg]eq?\b|\\neq|≤|≥|≠|\\p?mod|\\equiv")


# a residue "9 \\pmod{11}", "9 (\\mod 11)", "9 mod 11" (normal forms: no spaces) is its value
_MODULUS = re.compile(r"^(.+?)\(?(?:\\[pb]?mod|mod)\{?\w+\}?\)?$")
_ORDER = r"<|>|\\leq?|\\geq?|≤|≥"
_ONE_SIDED = re.compile(rf"^[A-Za-z]({_ORDER})([^<>=]+)$|^([^<>=]+?)({_ORDER})[A-Za-z]$")
_TWO_SIDED = re.compile(rf"^([^<>=]+?)({_ORDER})[A-Za-z]({_ORDER})([^<>=]+)$")
_ALTERNATIVES = re.compile(r"(?<![A-Za-z\\])or|\\lor|\\cup|,")


_FLIPPED = {"<": ">", ">": "<", "≤": "≥", "≥": "≤", "\\le": "\\ge", "\\leq": "\\geq", "\\ge": "\\le",
            "\\geq": "\\leq"}


def _below(op: str) -> bool:
    """Whether the order ``op`` (with the variable on its left) bounds it from above: ``<``, ``\\leq``."""
    return op in ("<", "≤") or op.startswith("\\le")


def _closed(op: str) -> bool:
    return op not in ("<", ">")


def _as_interval(form: str) -> str | None:
    """The interval notation of a one-variable inequality in normal form (``x>5`` -> ``(5,\\infty)``,
    ``y\\leq0`` -> ``(-\\infty,0]``, ``x<2orx>3`` -> ``(-\\infty,2)\\cup(3,\\infty)``), else None."""
    parts = []
    for piece in _ALTERNATIVES.split(form):
        two, one = _TWO_SIDED.match(piece), _ONE_SIDED.match(piece)
        if two:
            low, low_op, high_op, high = two.groups()
            if not (_below(low_op) and _below(high_op)):
                return None  # "5 > x > 2" is written the other way round, "2 < x > 1" is no interval
            parts.append(("[" if _closed(low_op) else "(") + f"{low},{high}" + ("]" if _closed(high_op) else ")"))
        elif one:
            op, bound = (one.group(1), one.group(2)) if one.group(1) else (_FLIPPED[one.group(4)], one.group(3))
            bracket = "]" if _closed(op) else ")"
            parts.append(f"(-\\infty,{bound}{bracket}" if _below(op)
                         else ("[" if _closed(op) else "(") + f"{bound},\\infty)")
        else:
            return None
    if not parts:
        return None
    parts.sort(key=lambda part: (not part.startswith("(-\\infty"), as_number(part[1:].split(",")[0]) or 0))
    return "\\cup".join(parts)


def _spellings(answer: str) -> set[str]:
    """Normal forms ``answer`` may be written in: as it is, without units (``\\text{}`` or plain: ``864 in^2``),
    without a leading ``x=``, a residue without its modulus, an inequality in interval notation."""
    forms = {normal_form(answer), normal_form(_UNITS.sub("", answer))}
    for form in list(forms):
        for pattern in (_NAMED_VALUE, _PLAIN_UNIT, _MODULUS):  # the value named, measured, or taken modulo
            found = pattern.match(form)
            if found:
                forms.add(found.group(1))
        interval = _as_interval(form)
        if interval:
            forms.add(interval)
        matrix = _MATRIX.fullmatch(form)
        if matrix:  # a column vector is the tuple of its entries
            form = "[" + ",".join(v for v in matrix.group(1).split("\\\\") if v) + "]"
            forms.add(form)
        if len(form) > 2 and form[0] + form[-1] in ("[]", "()") and _arity(form[1:-1]) >= 3:
            forms |= {f"[{form[1:-1]}]", f"({form[1:-1]})"}  # a triple is a vector whatever its brackets
    return {f for f in forms if f}


def _arity(form: str) -> int:
    """How many comma-separated values ``form`` holds at the top level (1 for a single value)."""
    depth, count = 0, 1
    for ch in form:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth <= 0:
            count += 1
    return count


def _symbols(form: str) -> frozenset[str]:
    """Free letters of a normal form (LaTeX commands removed): ``6+9i`` -> {i}, ``\\frac{\\pi}{2}`` -> {}."""
    return frozenset(re.findall(r"[A-Za-z]", _COMMAND.sub(" ", form)))


_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:/-?\d+(?:\.\d+)?)?$")


def as_number(text: str) -> Fraction | None:
    """The exact value of a plain number spelling (``3``, ``-0.25``, ``14/3``, ``\\frac{14}{3}``), else None."""
    text = text.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text) else text
    m = _FRAC.match(text)
    try:
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
        if _NUMBER.match(text):
            return Fraction(text) if "/" not in text else Fraction(*(Fraction(p) for p in text.split("/")))
    except (ValueError, ZeroDivisionError):
        return None
    return None


MAX_REFERENCE_CHARS = 500
_WORD_ANSWER = re.compile(r"^[\s(]*[A-Za-z][A-Za-z .,'-]*[)\s]*$")


def reference_readable(reference: str) -> bool:
    """Whether math-verify reads ``reference`` as mathematics (its parse yields an expression, not just the
    raw string back), or it is a plain word or letter answer, which the string comparison settles.

    Parsing alone is cheap and bounded (math-verify leaves ``10^{10^{10}}`` unevaluated; only comparing can
    stall, and that runs in the checker pool); overlong references are refused outright.
    """
    text = normalize_answer(reference)
    if len(text) > MAX_REFERENCE_CHARS:
        return False
    if as_number(normal_form(text)) is not None or _WORD_ANSWER.match(normal_form(text)):
        return True
    import logging

    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call without signal timeouts
    return any(not isinstance(item, str) for item in parse(f"${text}$", parsing_timeout=None))


class ReferenceMatcher:
    """Whether candidate answers equal one reference answer, mathematically.

    Cheap first: equal spellings match (``x = 5`` and ``5``, ``864`` and ``864 \\mbox{ inches}^2``); two plain
    numbers are compared exactly; a candidate with other free variables, an inequality where the reference
    has none, or digits none of which the reference has, is no match (intermediate-answer heuristics:
    ``0.7071`` is not taken for ``\\frac{\\sqrt{2}}{2}``; final answers are checked by the verify stage).
    Everything else goes
    to ``pair_check`` (math-verify in the verify stage's timeout-safe pool), batched and cached; a
    timeout counts as no match and is counted in ``timeouts``.
    """

    def __init__(self, reference: str, pair_check: PairCheck):
        self.reference = reference
        self.pair_check = pair_check
        self._ref_letter = choice_letter(reference)
        self._ref_forms = _spellings(reference)
        self._ref_numbers = {n for n in (as_number(f) for f in self._ref_forms) if n is not None}
        self._ref_digits = {d for f in self._ref_forms for d in re.findall(r"\d", f)}
        self._ref_symbols = {_symbols(f) for f in self._ref_forms}
        self._ref_relation = any(_RELATION.search(f) for f in self._ref_forms)
        self._ref_arity = _arity(normal_form(reference))
        self._ref_irrational = not self._ref_numbers and any(_IRRATIONAL.search(f) for f in self._ref_forms)
        self._cache: dict[str, bool] = {}
        self.timeouts = 0
        self.slow_checks = 0

    def _cheap(self, candidate: str) -> bool | None:
        """True / False when the spellings settle it, None when math-verify must."""
        if self._ref_letter:  # a multiple-choice reference: only the letter chosen counts ("(E) Hyperbola")
            leading = _LEADING_CHOICE.match(candidate)
            return (choice_letter(candidate) or (leading.group(1) if leading else None)) == self._ref_letter
        forms = _spellings(candidate)
        if not forms:
            return False
        if forms & self._ref_forms:
            return True
        numbers = {n for n in (as_number(f) for f in forms) if n is not None}
        if numbers and self._ref_numbers:
            return bool(numbers & self._ref_numbers)
        form = normal_form(candidate)
        if _arity(form) != self._ref_arity:
            return False  # a list of values is not one value, nor a pair a triple
        if numbers and self._ref_irrational:
            return False  # a plain rational number is not 2\\sqrt{5}
        if self._ref_numbers and (_OPERATION.search(form) or _IRRATIONAL.search(form)):
            return False  # a computation not carried out ("6 \\times 3 + 5") does not state the number
        if bool(_RELATION.search(form)) != self._ref_relation:
            return False  # "x < 5/3" does not state the value 3
        digits = set(re.findall(r"\d", form))
        if self._ref_numbers and not digits:
            return False  # a numeric reference is never equal to an expression without digits
        if digits and self._ref_digits and not digits & self._ref_digits:
            return False  # different numerals: a restatement of the reference shares at least one digit
        if _symbols(form) not in self._ref_symbols:
            return False  # different free variables ("2x" is not 23, "r(x)" is not a polynomial in x)
        return None

    def matches(self, candidates: Sequence[str]) -> list[bool]:
        """One verdict per candidate (same order)."""
        cheap = {c: self._cheap(c) for c in dict.fromkeys(candidates) if c not in self._cache}
        self._cache.update((c, verdict) for c, verdict in cheap.items() if verdict is not None)
        todo = [c for c, verdict in cheap.items() if verdict is None]
        if todo:
            self.slow_checks += len(todo)
            for candidate, verdict in zip(todo, self.pair_check([(c, self.reference) for c in todo])):
                if verdict is None:
                    self.timeouts += 1
                self._cache[candidate] = bool(verdict)
        return [self._cache[c] for c in candidates]

    def match(self, candidate: str | None) -> bool:
        return False if candidate is None else self.matches([candidate])[0]
