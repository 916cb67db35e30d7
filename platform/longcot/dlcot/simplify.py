"""Simplification and error-state optimisation of a clustered segmentation.

``simplify`` applies the ``keep_first_correct`` policy (DLCoT's):

- no approach or unit reaches the reference answer: the sample is unsolvable (``Unsolvable``);
- up to the first correct one (the main path): distinct failed approaches stay, because backtracking is
  structure; only later members of a cluster go;
- after it: every non-first cluster member goes (a verification unit is redundant only with another unit
  of its cluster, and the best check of them stays: re-checking the work that found the answer is what a
  check is, not a repeat of it); with ``drop_incorrect_after_correct`` (the paper's configured run) so does every approach or unit
  after it that lands on a wrong answer; at most ``max_verification_units`` units stay after it, the
  first genuine checks in text order (``check_rank``): a unit that re-checks the answer before one that
  solves the problem another way, and among those a unit that does new working before one that only
  restates the result or muses about another way.

``optimise_errors`` then handles erroneous spans inside kept members: ``keep`` leaves them, ``remove_span``
drops each span (the paragraph that went wrong through the sentence that flags it, so the text around it
still reads on), ``remove_approach`` drops every kept member with an error, except the first correct one,
whose spans are removed instead (dropping it would leave the trace without its answer).

Both keep at least one verification unit that checks where the original had one: checking is structure
too, and a kept "Is there another way? This one seems fine." alone would teach announcing a check, not
doing it.
"""

from __future__ import annotations

import re
from dataclasses import replace

from longcot.dlcot.config import PolicyConfig
from longcot.dlcot.structure import CALCULATION, WORKING, Approach, Segmentation, VerificationUnit, squash

_PIECES = re.compile(r"(?<=[.!?])\s+|\n+")
# terms joined by operators: "3 * 4 = 12", "\\frac{8}{49} \\cdot 2 = \\frac{16}{49}"
_MATH_RUN = re.compile(r"[\w\\{}().^|]+(?:\s*(?:[-+*/×÷^=·<>≤≥]|\\(?:cdot|times|div|le|ge|equiv))\s*[\w\\{}().^|-]+)+")


class Unsolvable(ValueError):
    """No approach or unit of the thought reaches the reference answer."""


def _works(thought: str, unit: VerificationUnit) -> bool:
    """Whether ``unit`` does some checking: a value, an equation, some LaTeX (not only "maybe there's
    another way, but this one is fine")."""
    return bool(WORKING.search(thought[unit.start : unit.end]))


def genuine(thought: str, unit: VerificationUnit) -> bool:
    """Whether ``unit`` genuinely checks: it carries out a calculation that the thought has not already
    written before it. A unit that only restates the result, the calculation or the formula it came from
    ("As computed, 3 * 4 = 12", "the scalar projection is a · b over b · b, which is 8/49") checks nothing."""
    before = squash(thought[: unit.start])
    return any(squash(piece) not in before for piece in calculations(thought[unit.start : unit.end]))


def calculations(text: str) -> list[str]:
    """The calculations ``text`` carries out (``CALCULATION``): each run of terms joined by operators that
    computes something, and each sentence that computes in words ("Squaring 5 gives 25"); a fraction alone
    or a formula in letters is none."""
    found = [run.group(0) for run in _MATH_RUN.finditer(text) if CALCULATION.search(run.group(0))]
    for piece in _PIECES.split(text):
        if not any(run in piece for run in found) and CALCULATION.search(piece):
            found.append(piece)
    return found


def check_rank(thought: str, unit: VerificationUnit, position: int) -> tuple[bool, bool, bool, int]:
    """Which verification unit to keep first: one that confirms the reference answer, then a re-check of the
    work before another way of solving it, then one that genuinely checks, then the earlier."""
    return (not (unit.label == "confirm" and unit.correct), unit.alternative, not genuine(thought, unit), position)


def simplify(segmentation: Segmentation, policy: PolicyConfig) -> Segmentation:
    """Mark each approach and unit kept or dropped (with the reason) under ``policy``."""
    members = segmentation.members()
    thought = segmentation.thought
    first = segmentation.first_correct()
    if first is None:
        raise Unsolvable("no approach reaches the reference answer")
    representative: dict[int, Approach | VerificationUnit] = {}  # the first approach of each method cluster
    out: list[Approach | VerificationUnit] = []
    checks: list[int] = []  # positions of the units after the first correct member that may be kept
    for position, member in enumerate(members):
        reason = None
        is_unit = isinstance(member, VerificationUnit)
        rep = None if is_unit or member.cluster is None else representative.setdefault(member.cluster, member)
        if rep is not None and rep is not member and position != first:
            reason = f"redundant: same method as {rep.name}"
        elif position > first and is_unit and member.alternative and member.answer is None:
            reason = "another method, given up before it reached an answer"
        elif position > first and policy.drop_incorrect_after_correct and not member.correct and (
                is_unit or member.label == "incorrect"):
            reason = "incorrect after the first correct approach"
        elif position > first and is_unit:
            checks.append(position)
        out.append(replace(member, kept=reason is None, reason=reason))
    # units after the answer: the best check of each cluster (check_rank), then the best ones up to the cap
    rank = {k: check_rank(thought, out[k], k) for k in checks}
    best: dict[int, int] = {}  # cluster (or -1 - position when none) -> its best check
    for k in sorted(checks, key=rank.get):
        key = out[k].cluster if out[k].cluster is not None else -1 - k
        if key in best:
            out[k] = replace(out[k], kept=False, reason=f"redundant: the same check as {out[best[key]].name}")
        else:
            best[key] = k
    cap = policy.max_verification_units
    survivors = sorted(best.values(), key=rank.get)
    if cap is not None and len(survivors) > cap:
        kept_names = ", ".join(out[k].name for k in sorted(survivors[:cap]))
        for k in survivors[cap:]:
            out[k] = replace(out[k], kept=False, reason=f"over the cap of {cap} verification unit(s): "
                             f"{_why_not(thought, out[k], kept_names)}")
    return _keep_one_unit(segmentation.with_members(out), policy.max_verification_units)


_WHY_NOT = ("it does not confirm the answer; {} kept", "it solves another way; {} re-checks",
            "it only restates earlier work; {} kept")  # one per criterion of ``check_rank``, in order


def _why_not(thought: str, unit: VerificationUnit, kept: str) -> str:
    """Why a unit was not the one kept under the cap: the first ``check_rank`` criterion it loses on."""
    lost = check_rank(thought, unit, 0)[:3]
    return next((why for why, loses in zip(_WHY_NOT, lost) if loses), "{} checks first").format(kept)


def optimise_errors(segmentation: Segmentation, policy: PolicyConfig) -> Segmentation:
    """Apply ``policy.errors`` (``keep`` | ``remove_span`` | ``remove_approach``) to erroneous spans of kept members."""
    if policy.errors == "keep":
        return segmentation
    first = segmentation.first_correct()
    out = []
    for position, member in enumerate(segmentation.members()):
        if not member.kept or not member.errors:
            out.append(member)
        elif policy.errors == "remove_approach" and position != first:
            out.append(replace(member, kept=False, reason="contains an erroneous step"))
        else:
            out.append(replace(member, errors=tuple(replace(e, removed=True) for e in member.errors)))
    return _keep_one_unit(segmentation.with_members(out), policy.max_verification_units)


def _keep_one_unit(segmentation: Segmentation, cap: int | None) -> Segmentation:
    """Keep a verification unit that checks wherever the original had one: when no kept unit does any
    checking (none is kept, or only "maybe there's another way, but this one is fine"), bring back the best
    unit by ``check_rank`` (redundant ones included: checking is structure).
    Under ``cap`` it takes the place of the kept units that do no checking, the worst ranked first."""
    thought, units = segmentation.thought, segmentation.units
    kept = [u for u in units if u.kept]
    if not units or any(_works(thought, u) for u in kept):
        return segmentation
    rank = {id(u): check_rank(thought, u, k) for k, u in enumerate(units)}
    best = min(units, key=lambda u: rank[id(u)])
    if best.kept or (kept and not _works(thought, best)):
        return segmentation  # no unit does more checking than the ones kept
    over = len(kept) + 1 - cap if cap is not None else 0
    dropped = set(sorted(kept, key=lambda u: rank[id(u)], reverse=True)[: max(over, 0)])
    restored = [replace(u, kept=True, reason=None) if u is best else
                replace(u, kept=False, reason=f"over the cap of {cap} verification unit(s): one that checks is kept")
                if u in dropped else u for u in units]
    return replace(segmentation, units=tuple(restored))
