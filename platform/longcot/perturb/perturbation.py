"""One record in, one perturbed record out: the row function the ``perturb`` stage maps over its input.

Contract of ``perturb_record``:
- in: a record with ``response`` (and, for ``wrong_answer``, a ``verdict`` from verify);
- out: the same id, the perturbed text in ``response``, the untouched text in ``original_response`` (an
  earlier transform's original is kept there: the text this stage started from is recoverable from the
  lineage edits), ``thought``/``solution`` re-split when they were set, and one ``perturb`` lineage entry
  saying exactly what changed;
- rejected (``RejectRow``): no response, a thought with too few steps for the kind, a ``wrong_answer``
  trace without a usable verdict or final answer.

Randomness comes from ``record_rng(seed, kind, id)`` alone, so the output of a record never depends on
which worker handled it or on the other records in its batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

from longcot import records
from longcot.errors import RejectRow
from longcot.perturb import content, structure
from longcot.perturb.config import STRUCTURE_KINDS, PerturbConfig, PerturbLineage
from longcot.traces import parse_trace, replace_thought

STAGE = "perturb"


def record_rng(seed: int, kind: str, record_id: str) -> random.Random:
    """The random source of one record: a function of (seed, kind, id) only."""
    return random.Random(int(records.stable_hash("perturb", seed, kind, record_id), 16))


@dataclass
class Donors:
    """What perturbations borrow from other records: thought steps (insert) and answers (wrong_answer)."""

    steps: list[tuple[str, int, str]] = field(default_factory=list)  # (record id, step index, text)
    answers: list[str] = field(default_factory=list)

    @classmethod
    def from_records(cls, rows: Iterable[dict], config: PerturbConfig) -> "Donors":
        """Steps (a seeded reservoir sample of at most ``config.donor_steps``) and distinct reference answers."""
        rng = random.Random(int(records.stable_hash("donors", config.seed), 16))
        donors = cls()
        seen_steps = 0
        answers = {}
        for row in rows:
            if config.kind == "insert_steps" and row.get("response"):
                parsed = parse_trace(row["response"], row.get("finish_reason"))
                for index, text in enumerate(parsed.step_texts()):
                    seen_steps += 1
                    entry = (row["id"], index, text)
                    if len(donors.steps) < config.donor_steps:
                        donors.steps.append(entry)
                    elif (slot := rng.randrange(seen_steps)) < config.donor_steps:
                        donors.steps[slot] = entry
            if config.kind == "wrong_answer" and row.get("reference_answer"):
                answers.setdefault(row["reference_answer"], None)
        donors.answers = list(answers)
        return donors

    @cached_property
    def ids(self) -> set[str]:
        """The records the steps come from."""
        return {rid for rid, _, _ in self.steps}

    def draw_step(self, record_id: str):
        """A function ``rng -> (text, donor id, donor step)`` drawing steps of records other than ``record_id``."""
        if not self.ids - {record_id}:
            raise RejectRow("insert_steps needs steps of other records, and the input has none")

        def draw(rng: random.Random) -> tuple[str, str, int]:
            while True:  # terminates: some step belongs to another record
                rid, index, text = self.steps[rng.randrange(len(self.steps))]
                if rid != record_id:
                    return text, rid, index

        return draw


def perturb_record(row: dict, config: PerturbConfig, donors: Donors | None = None) -> dict:
    """Perturb one record as ``config`` says (see the module docstring for the contract)."""
    response = row.get("response")
    if not response:
        raise RejectRow("no response to perturb")
    donors = donors or Donors()
    rng = record_rng(config.seed, config.kind, row["id"])
    detail: dict = {"kind": config.kind, "ratio": config.ratio, "seed": config.seed}
    updates: dict = {}
    if config.kind in STRUCTURE_KINDS:
        new_response = _perturb_steps(row, response, config, rng, donors, detail)
    elif config.kind == "corrupt_digits":
        new_response, edits, seen = content.corrupt_digits(response, config.ratio, rng, config.max_number)
        detail |= {"numbers": seen, "affected": len(edits), "edits": edits}
    elif config.kind == "remove_keywords":
        new_response, edits, seen = content.remove_keywords(response, config.ratio, rng, config.keywords)
        detail |= {"occurrences": seen, "affected": len(edits), "edits": edits}
    else:
        new_response = _wrong_answer(row, response, config, rng, donors, detail, updates)
    out = {**row, **updates, "response": new_response, "original_response": row.get("original_response") or response}
    if row.get("thought") is not None or row.get("solution") is not None:
        parsed = parse_trace(new_response, row.get("finish_reason"))
        out |= {"thought": parsed.thought, "solution": parsed.solution, "markers": parsed.markers}
    return records.add_lineage(out, PerturbLineage(**detail))


def _perturb_steps(row, response, config, rng, donors, detail) -> str:
    parsed = parse_trace(response, row.get("finish_reason"))
    layout = structure.StepLayout.of(parsed.thought, parsed.steps)
    if config.kind == "insert_steps":
        new_layout, change = structure.insert_steps(layout, config.ratio, rng, donors.draw_step(row["id"]))
    else:  # delete_steps, shuffle_steps: the functions of those names
        new_layout, change = getattr(structure, config.kind)(layout, config.ratio, rng)
    detail |= {"markers": parsed.markers, "steps": change.steps, "affected": change.affected, **change.detail}
    return replace_thought(response, parsed, new_layout.render())


def _wrong_answer(row, response, config, rng, donors, detail, updates) -> str:
    verdict = row.get("verdict")
    if verdict is None:
        raise RejectRow("no verdict: run verify before building the wrong_answer variant")
    if verdict in config.wrong_verdicts:
        detail |= {"source": "rejected_by_verify", "verdict": verdict, "affected": 0, "edits": []}
        return response
    if verdict != "correct":
        raise RejectRow(f"verdict {verdict!r} is neither correct nor one of wrong_verdicts {config.wrong_verdicts}")
    if not config.replace_answers:
        raise RejectRow("verified correct: the wrong_answer variant keeps the traces verification rejected "
                        "(set replace_answers to also use correct ones)")
    if rng.random() >= config.ratio:
        detail |= {"source": "correct_kept", "affected": 0, "edits": []}
        return response
    new_response, edits, new_answer = content.replace_final_answer(
        response, row.get("reference_answer"), rng, donors.answers
    )
    detail |= {"source": "answer_replaced", "affected": len(edits), "edits": edits}
    updates |= {"predicted_answer": new_answer, "verdict": "incorrect", "correct": False}
    return new_response
