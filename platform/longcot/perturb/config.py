"""Perturbation settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from longcot.records import Lineage
from longcot.settings import StageResources, StrictModel

PerturbKind = Literal[
    "wrong_answer", "corrupt_digits", "remove_keywords", "delete_steps", "insert_steps", "shuffle_steps"
]
STRUCTURE_KINDS = ("delete_steps", "insert_steps", "shuffle_steps")

# The reflection keywords of Li et al. 2025, as listed in the paper.
REFLECTION_KEYWORDS = [
    "Alternatively",
    "Wait",
    "Just to be thorough",
    "Just to make sure",
    "Let me just double-check",
    "Let me try another",
    "Let me verify",
    "Let me check",
    "Hmm",
    "But",
    "Maybe I should consider",
    "Maybe I can consider",
]


class PerturbConfig(StrictModel):
    """Corrupt the content or the structure of traces at a ratio, deterministically per (seed, record id).

    Content kinds act on the whole response: ``corrupt_digits`` replaces each number with probability
    ``ratio``; ``remove_keywords`` removes each reflection keyword with probability ``ratio``;
    ``wrong_answer`` keeps the traces verification rejected (and, with ``replace_answers``, gives a share
    ``ratio`` of the correct ones a wrong final answer). Structure kinds act on the thought's steps
    (blank-line paragraphs) and leave the solution byte-identical: ``ratio`` is the share of steps
    deleted, inserted (from other records' thoughts) or shuffled among themselves.
    """

    kind: PerturbKind = Field(..., description="Which perturbation.")
    ratio: float = Field(1.0, ge=0, le=1, description="Share of steps, numbers or keywords affected.")
    seed: int = Field(0, description="Seed; the same (seed, record id) always gives the same output.")
    max_number: int = Field(
        9, ge=1,
        description="corrupt_digits: a chosen number becomes a random integer in 0..max_number (a different one).",
    )
    keywords: list[str] = Field(
        default_factory=lambda: list(REFLECTION_KEYWORDS),
        min_length=1,
        description="remove_keywords: phrases removed (whole words, case-sensitive, with the punctuation right after).",
    )
    wrong_verdicts: list[str] = Field(
        default_factory=lambda: ["incorrect"],
        min_length=1,
        description="wrong_answer: verdicts whose traces make up the variant as they are.",
    )
    replace_answers: bool = Field(
        False,
        description="wrong_answer: also use correct traces, replacing the final answer of a share `ratio` of them "
        "with a wrong one (the rest stay correct). Off: correct traces go to the rejected file.",
    )
    donor_steps: int = Field(
        20000, ge=1,
        description="insert_steps: at most this many steps of other records to draw from (sampled by seed).",
    )
    resources: StageResources = Field(default_factory=StageResources, description="Resources per Ray Data worker.")


class PerturbLineage(Lineage, stage="perturb"):
    """What a perturbation did to one record: its settings, what could be changed (``steps``, ``numbers`` or
    ``occurrences``), how much was (``affected``) and where (``edits`` and the step lists)."""

    kind: str = Field(description="The perturbation (config.kind).")
    ratio: float = Field(description="The share asked for (config.ratio).")
    seed: int = Field(description="The base seed (config.seed).")
    affected: int = Field(0, description="Steps, numbers or keywords changed.")
    edits: list[list[Any]] = Field([], description="Text edits, each [start, old, new] in the input response.")
    markers: str | None = Field(None, description="Structure kinds: the thought's marker convention.")
    steps: int = Field(0, description="Structure kinds: steps in the input thought.")
    deleted: list[int] = Field([], description="delete_steps: the steps removed.")
    inserted: list[Any] = Field([], description="insert_steps: [position, donor id, donor step] per step.")
    moved: list[Any] = Field([], description="shuffle_steps: [from, to] per step moved.")
    numbers: int = Field(0, description="corrupt_digits: numbers in the response.")
    occurrences: int = Field(0, description="remove_keywords: keywords in the response.")
    source: str | None = Field(None, description="wrong_answer: where the record's answer came from.")
    verdict: str | None = Field(None, description="wrong_answer: the verdict of a record kept as it was.")
