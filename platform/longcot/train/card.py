"""The student card: what a trained student carries with it, beside its weights.

The train stage writes ``longcot_student.json`` into the adapter (or model) directory it saves. Whoever loads
the student later finds it there, so the student is prompted exactly as it was trained and is never
scored on problems it trained on:

- ``prompt``: the system turn and instruction of its training examples (with its tokenizer's chat template,
  the whole prompt); the eval stage prompts every variant with it, and the serve stage's smoke test too;
- ``trained_problems``: a hash of the text of every problem it trained on; the eval stage refuses to score
  any of them;
- ``markers``: the thought-marker convention of its training traces (what ``structure_rate`` looks for);
- ``base_model``, ``mode``, ``cutoff_len``: how it was made.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, Field

from longcot import records
from longcot.generate.prompting import StudentPrompt

CARD_FILE = "longcot_student.json"


def problem_hash(problem: str) -> str:
    """What identifies a problem's text on a card: a hash of it with whitespace collapsed."""
    return records.stable_hash("problem-text", records.problem_key(problem or ""))


class StudentCard(BaseModel):
    base_model: str = Field(..., description="The model the student was trained from (as configured).")
    mode: Literal["lora", "full"]
    prompt: StudentPrompt
    markers: str | None = Field(None, description="Marker convention of most training traces: sky | think | none.")
    cutoff_len: int
    response_field: str = "auto"
    trained_problems: list[str] = Field(default_factory=list, description="problem_hash of every trained problem.")
    heldout_problems: int = 0

    def overlap(self, problems: Iterable[dict]) -> list[str]:
        """Ids of ``problems`` (records) whose text the student trained on."""
        trained = set(self.trained_problems)
        return [p["id"] for p in problems if problem_hash(p.get("problem") or "") in trained]

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CARD_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


def load_card(*directories: str | Path | None) -> StudentCard | None:
    """The card in the first of ``directories`` (an adapter, a model directory) that has one."""
    for directory in directories:
        if directory and (Path(directory) / CARD_FILE).is_file():
            return StudentCard.model_validate_json((Path(directory) / CARD_FILE).read_text(encoding="utf-8"))
    return None


def majority_markers(rows: Iterable[dict]) -> str | None:
    counts = Counter(r.get("markers") for r in rows if r.get("markers"))
    return counts.most_common(1)[0][0] if counts else None
