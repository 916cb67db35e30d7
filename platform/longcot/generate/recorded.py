"""A recorded teacher: responses a teacher wrote earlier answer the problems they belong to.

This is how real teacher output reaches a laptop (the Sky-T1 traces in ``jobs/data/traces``), and how a
distillation set (Bespoke-Stratos, OpenThoughts, a dump of an API teacher) becomes a job's teacher: the
``recorded`` backend goes through the generate stage like any other (same records, resume, Ray Data actor
pool), only its answers are looked up instead of generated.

- A ``Recording`` indexes a JSONL/Parquet file by problem text (whitespace collapsed): each problem has its
  responses in file order. Rows without a problem or a response, and unreadable lines, are counted and
  left out (the recording is not the stage's input: nothing of the user's is lost).
- Sample ``i`` of a problem gets the problem's ``i``-th recorded response. A problem the recording does not
  answer, or a sample index past its responses, is an ``error`` sample that says so.
- ``finish_reason`` comes from a mapped column, else from the text: ``length`` when the response stops
  before its closing marker (the teacher hit its limit), ``stop`` otherwise.
- Tokens are counted with ``RecordedSettings.tokenizer`` (the student's), the prompt as the chat messages
  rendered with its template.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

from longcot.errors import InputError
from longcot.generate.backend import Completion
from longcot.generate.config import RecordedSettings
from longcot.recordfiles import BadLine, read_raw
from longcot.records import problem_key
from longcot.traces import parse_trace

FINISH_REASONS = ("stop", "length")


class Recording:
    """The responses of a recording file, by problem."""

    def __init__(self, settings: RecordedSettings):
        self.path = Path(settings.path)
        fields = settings.fields
        self.by_problem: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)  # key -> (line, text, finish)
        self.rows = self.unusable = 0
        for item in read_raw(self.path):
            self.rows += 1
            line, row = (item.line, {}) if isinstance(item, BadLine) else item  # unreadable: a row with no text
            problem, response = row.get(fields.problem), row.get(fields.response)
            if not all(isinstance(text, str) and text.strip() for text in (problem, response)):
                self.unusable += 1
                continue
            finish = row.get(fields.finish_reason) if fields.finish_reason else None
            self.by_problem[problem_key(problem)].append((line, response, finish if finish in FINISH_REASONS else None))
        if self.rows and len(self.by_problem) == 0:
            raise InputError(f"no row has both a {fields.problem!r} and a {fields.response!r} text "
                             "(set generate.recorded.fields)", str(self.path))

    def response(self, problem: str, sample_index: int) -> tuple[int, str, str | None] | str:
        """``(line, response, finish_reason or None)`` of sample ``sample_index``, or why there is none."""
        found = self.by_problem.get(problem_key(problem or ""))
        if not found:
            return "the recording has no response to this problem"
        if sample_index >= len(found):
            return f"the recording has {len(found)} response(s) to this problem; sample {sample_index} has none"
        return found[sample_index]


def finish_reason_of(text: str) -> str:
    """``length`` when a recorded response stops before it is finished (see ``longcot.traces``), else ``stop``."""
    return "length" if parse_trace(text).truncated else "stop"


class RecordedTeacher:
    """Answers sample records from a ``Recording`` (the recorded backend's per-actor state)."""

    def __init__(self, settings: RecordedSettings):
        from longcot.tokens import TokenCounter

        self.recording = Recording(settings)
        self.counter = TokenCounter(settings.tokenizer)

    def answer(self, rows: list[dict]) -> list[tuple[Completion, int | None]]:
        """One completion per sample record (with the recording's line that gave it, None when none did)."""
        started = time.perf_counter()
        found = [self.recording.response(r.get("problem") or "", int(r.get("sample_index") or 0)) for r in rows]
        prompts = self.counter.count([_prompt_text(self.counter, r.get("prompt")) for r in rows])
        texts = [f[1] if isinstance(f, tuple) else "" for f in found]
        outputs = self.counter.count(texts)
        seconds = (time.perf_counter() - started) / max(1, len(rows))
        out = []
        for hit, text, n_prompt, n_out in zip(found, texts, prompts, outputs):
            if isinstance(hit, str):
                out.append((Completion.failed(hit, prompt_tokens=n_prompt, seconds=seconds), None))
                continue
            line, _, finish = hit
            out.append((Completion(text, n_prompt, n_out, finish or finish_reason_of(text), None, seconds), line))
        return out


def _prompt_text(counter, prompt: str | None) -> str:
    """The prompt a recorded teacher 'saw': the record's chat messages with the token counter's template."""
    try:
        messages = json.loads(prompt or "[]")
        return counter.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # a tokenizer without a chat template: count the raw text
        return prompt or ""
