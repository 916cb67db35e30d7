"""Structure perturbations: keep what each step says, break how the steps hang together.

Steps are the thought's blank-line-separated paragraphs (``longcot.traces.split_steps``). A
``StepLayout`` keeps everything around them (leading and trailing whitespace, each separator), so an
operation changes only the steps it picks and the text renders byte-identical everywhere else.

``ratio`` is the share of steps affected: ``ratio * n`` rounded stochastically (so the expected count is
exact for any n), drawn from the seeded ``random.Random`` the caller passes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from random import Random
from typing import Callable

from longcot.errors import RejectRow
from longcot.traces import split_steps

DEFAULT_SEPARATOR = "\n\n"


@dataclass
class StepLayout:
    """A thought as ``prefix + steps[0] + gaps[0] + steps[1] + ... + steps[-1] + suffix``."""

    prefix: str
    steps: list[str]
    gaps: list[str]  # len(steps) - 1 separators
    suffix: str

    @classmethod
    def of(cls, thought: str, spans: list[tuple[int, int]] | None = None) -> "StepLayout":
        """The layout of ``thought``; ``spans`` are its step spans when already split (``ParsedTrace.steps``)."""
        spans = split_steps(thought) if spans is None else spans
        if not spans:
            return cls(thought, [], [], "")
        steps = [thought[a:b] for a, b in spans]
        gaps = [thought[spans[i][1] : spans[i + 1][0]] for i in range(len(spans) - 1)]
        return cls(thought[: spans[0][0]], steps, gaps, thought[spans[-1][1] :])

    def render(self) -> str:
        body = "".join(part for pair in zip(self.steps, [*self.gaps, ""]) for part in pair)
        return self.prefix + body + self.suffix

    def separator(self) -> str:
        """The most common separator, used around inserted steps."""
        return Counter(self.gaps).most_common(1)[0][0] if self.gaps else DEFAULT_SEPARATOR


@dataclass
class StepChange:
    """What a structure perturbation did, in step indices (for the lineage)."""

    steps: int  # steps in the input thought
    affected: int  # steps deleted, inserted or moved
    detail: dict = field(default_factory=dict)


def step_count(ratio: float, n: int, rng: Random) -> int:
    """``ratio * n`` rounded up with probability equal to its fraction (unbiased for every n)."""
    exact = ratio * n
    whole = math.floor(exact + 1e-9)
    return min(n, whole + (1 if rng.random() < exact - whole - 1e-9 else 0))


def delete_steps(layout: StepLayout, ratio: float, rng: Random) -> tuple[StepLayout, StepChange]:
    """Delete ``ratio`` of the steps, chosen at random; the others keep their order and separators."""
    n = len(layout.steps)
    if n == 0:
        raise RejectRow("the thought has no steps to delete")
    chosen = sorted(rng.sample(range(n), step_count(ratio, n, rng)))
    kept = sorted(set(range(n)) - set(chosen))
    # a kept step keeps the separator after it; the last kept step needs none
    gaps = [layout.gaps[index] for index in kept[:-1]]
    out = StepLayout(layout.prefix, [layout.steps[index] for index in kept], gaps, layout.suffix)
    return out, StepChange(n, len(chosen), {"deleted": chosen})


DonorDraw = Callable[[Random], tuple[str, str, int]]  # rng -> (text, donor record id, donor step index)


def insert_steps(layout: StepLayout, ratio: float, rng: Random, draw: DonorDraw) -> tuple[StepLayout, StepChange]:
    """Insert ``ratio * n`` steps drawn from other records (``draw``) at random places between the steps.

    Each inserted step is set off by the thought's usual separator; the original steps keep their order
    and their own separators.
    """
    n = len(layout.steps)
    if n == 0:
        raise RejectRow("the thought has no steps to insert between")
    count = step_count(ratio, n, rng)
    # Slot g means "before original step g" (g == n: after the last); several may share a slot.
    slots = sorted(rng.randrange(n + 1) for _ in range(count))
    donors = [draw(rng) for _ in range(count)]
    # (text, original index or None)
    items: list[tuple[str, int | None]] = [(step, g) for g, step in enumerate(layout.steps)]
    inserted = []
    for k, (slot, (text, donor_id, donor_step)) in enumerate(zip(slots, donors)):
        # the k steps inserted before this one all sit before original step ``slot``: it is now at slot + k
        items.insert(slot + k, (text, None))
        inserted.append([slot + k, donor_id, donor_step])
    # two original steps still side by side keep their own separator; an inserted step gets the usual one
    sep = layout.separator()
    gaps = [layout.gaps[left] if left is not None and right is not None else sep
            for (_, left), (_, right) in zip(items, items[1:])]
    out = StepLayout(layout.prefix, [text for text, _ in items], gaps, layout.suffix)
    return out, StepChange(n, count, {"inserted": inserted})


def derangement(k: int, rng: Random) -> list[int]:
    """A uniformly random permutation of ``range(k)`` with no fixed point (k >= 2; k == 0 gives ``[]`` and
    draws nothing)."""
    while True:
        perm = list(range(k))
        rng.shuffle(perm)
        if all(i != p for i, p in enumerate(perm)):
            return perm


def shuffle_steps(layout: StepLayout, ratio: float, rng: Random) -> tuple[StepLayout, StepChange]:
    """Pick ``ratio * n`` step positions and permute their steps among them so each picked step moves.

    Unpicked steps, separators, prefix and suffix stay where they are. One picked step cannot move on its
    own, so a count of 1 becomes 0 or 2 with equal odds (the expected count stays ``ratio * n``).
    """
    n = len(layout.steps)
    if n < 2:
        raise RejectRow(f"the thought has {n} step{'s' if n != 1 else ''}: too few to shuffle")
    count = step_count(ratio, n, rng)
    if count == 1:
        count = 2 if rng.random() < 0.5 else 0
    positions = sorted(rng.sample(range(n), count))
    perm = derangement(count, rng)  # the step at positions[i] goes to positions[perm[i]]
    moved = [[positions[i], positions[p]] for i, p in enumerate(perm)]
    steps = list(layout.steps)
    for source, target in moved:
        steps[target] = layout.steps[source]
    out = StepLayout(layout.prefix, steps, list(layout.gaps), layout.suffix)
    return out, StepChange(n, count, {"moved": moved})
