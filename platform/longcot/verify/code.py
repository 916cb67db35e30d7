"""Code answers: take the program out of a response and run it against the problem's tests in the sandbox.

Tests (the record's ``tests`` JSON) come in two kinds:
- ``{"kind": "function", "entry_point", "test", "prompt"}``: HumanEval style. The program is the prompt
  (its imports and helpers), the answer (a whole function, or only its body as HumanEval completions
  are), the test code, then ``check(entry_point)``. Passing means exiting 0.
- ``{"kind": "stdio", "cases": [{"input", "output"}, ...]}`` (APPS/TACO style; ``{"inputs": [...],
  "outputs": [...]}`` is read too): the program runs once per case with the input on stdin, and its
  stdout must equal the output token by token (numbers within 1e-6). The first failing case decides.
"""

from __future__ import annotations

import ast
import contextlib
import math
import re
from dataclasses import dataclass

from longcot.verify.sandbox import RunResult, Sandbox

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class CodeVerdict:
    verdict: str  # correct | incorrect | timeout | no_answer | error
    detail: str | None = None


def extract_code(text: str | None) -> str | None:
    """The program in a response: the last fenced Python block (an unlabelled one if none is labelled),
    else the whole text when it is itself valid Python with a ``def``; None otherwise."""
    if not text:
        return None
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    plain = [body for lang, body in blocks if not lang]
    for found in (python, plain):
        if found and found[-1].strip():
            return found[-1].rstrip() + "\n"
    stripped = text.strip()
    if "def " in stripped:
        with contextlib.suppress(SyntaxError):
            ast.parse(stripped)
            return stripped + "\n"
    return None


def code_answer(parsed) -> str | None:
    """The program of a parsed trace: from its solution, else from anywhere in the response."""
    return extract_code(parsed.solution) or extract_code(parsed.thought)


def function_program(code: str, tests: dict) -> str:
    """The HumanEval-style program: prompt, answer, test code, ``check(entry_point)``."""
    entry = tests["entry_point"]
    prompt = tests.get("prompt") or ""
    if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        program = prompt + "\n\n" + code  # a whole function: the prompt's stub (docstring only) is replaced
    else:
        program = prompt + code  # only the body, as HumanEval completions are
    return f"{program}\n\n{tests['test']}\n\ncheck({entry})\n"


def stdio_cases(tests: dict) -> list[tuple[str, str]]:
    if "cases" in tests:
        return [(str(c.get("input", "")), str(c.get("output", ""))) for c in tests["cases"]]
    inputs, outputs = tests.get("inputs") or [], tests.get("outputs") or []
    if len(inputs) != len(outputs):
        raise ValueError(f"stdio tests: {len(inputs)} inputs but {len(outputs)} outputs")
    return [(_as_text(i), _as_text(o)) for i, o in zip(inputs, outputs)]


def _as_text(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def same_output(actual: str, expected: str) -> bool:
    """Token-by-token equality of two outputs; numbers compare within 1e-6 (absolute or relative)."""
    left, right = actual.split(), expected.split()
    return len(left) == len(right) and all(a == b or _close_numbers(a, b) for a, b in zip(left, right))


def _close_numbers(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    except ValueError:  # not numbers: unequal words
        return False


def check_code(code: str | None, tests: dict | None, sandbox: Sandbox) -> CodeVerdict:
    """Run ``code`` against ``tests`` in ``sandbox``; the verdict and, when not correct, why."""
    if not code:
        return CodeVerdict("no_answer", "no program found in the response")
    if not isinstance(tests, dict) or tests.get("kind") not in ("function", "stdio"):
        kind = tests.get("kind") if isinstance(tests, dict) else type(tests).__name__
        return CodeVerdict("error", f"unusable code tests (kind {kind!r}); expected function or stdio")
    if tests["kind"] == "function":
        if not tests.get("entry_point") or not tests.get("test"):
            return CodeVerdict("error", "function tests need entry_point and test")
        return _from_run(sandbox.run_python(function_program(code, tests)))
    try:
        cases = stdio_cases(tests)
    except (ValueError, TypeError, AttributeError) as exc:
        return CodeVerdict("error", str(exc))
    if not cases:
        return CodeVerdict("error", "stdio tests have no cases")
    for number, (given, expected) in enumerate(cases, start=1):
        result = sandbox.run_python(code, stdin=given)
        if result.status != "ok":
            failed = _from_run(result)
            return CodeVerdict(failed.verdict, f"case {number}: {failed.detail}")
        if not same_output(result.stdout, expected):
            shown = result.stdout.strip()[:80]
            return CodeVerdict("incorrect", f"case {number}: wrong output {shown!r}")
    return CodeVerdict("correct")


def _from_run(result: RunResult) -> CodeVerdict:
    verdict = {"ok": "correct", "timeout": "timeout", "error": "error"}.get(result.status)
    if verdict is None:  # failed, output_limit: the program's own fault
        return CodeVerdict("incorrect", f"{result.status}: {result.detail}")
    return CodeVerdict(verdict, result.detail)
