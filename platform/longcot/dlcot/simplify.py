"""Simplification and error-state optimisation of a clustered segmentation.

``simplify`` applies the ``keep_first_correct`` policy (DLCoT's):

- no approach or unit reaches the reference answer: the sample is unsolvable (``Unsolvable``);
- up to the first correct one (the main path): distinct failed approaches stay, because backtracking is
  structure; only later members of a cluster go;
- after it: every non-first cluster member goes, verification units included; with
  ``drop_incorrect_after_correct`` (the paper's configured run) so does every approach or unit after it
  that lands on a wrong answer; at most ``max_verification_units`` units stay after it: of the units
  that survive the rules above, those that confirm the reference answer before those that find a fault,
  then those that do some checking (a value, an equation) before those that only muse about another way,
  and among those the shortest (the checking structure at the least cost; ties go to the earlier unit).

``optimise_errors`` then handles erroneous spans inside kept members: ``keep`` leaves them, ``remove_span``
drops each span (the paragraph that went wrong through the sentence that flags it, so the text around it
still reads on), ``remove_approach`` drops every kept member with an error, except the first correct one,
whose spans are removed instead (dropping it would leave the trace without its answer).

Both keep at least one verification unit that checks where the original had one: checking is structure
too, and a kept "Is there another way? This one seems fine." alone would teach announcing a check, not
doing it.
"""

from __future__ import annotations

from dataclasses import replace

from longcot.dlcot.config import PolicyConfig
from longcot.dlcot.structure import WORKING, Approach, Segmentation, VerificationUnit


class Unsolvable(ValueError):
    """No approach or unit of the thought reaches the reference answer."""


def _name(member: Approach | VerificationUnit) -> str:
    return f"approach {member.index}" if isinstance(member, Approach) else f"verification unit {member.index}"


def _is_correct(member: Approach | VerificationUnit) -> bool:
    return member.correct


def _confirms(member: Approach | VerificationUnit) -> bool:
    return isinstance(member, VerificationUnit) and member.label == "confirm" and member.correct


def _works(thought: str, unit: VerificationUnit) -> bool:
    """Whether ``unit`` does some checking: a value, an equation, some LaTeX (not only "maybe there's
    another way, but this one is fine")."""
    return bool(WORKING.search(thought[unit.start : unit.end]))


def _unit_rank(thought: str, unit: VerificationUnit) -> tuple[bool, bool, int]:
    """Which verification unit to keep first: one that confirms the answer, then one that does some
    checking, then the shortest."""
    return (not _confirms(unit), not _works(thought, unit), unit.end - unit.start)


def simplify(segmentation: Segmentation, policy: PolicyConfig) -> Segmentation:
    """Mark each approach and unit kept or dropped (with the reason) under ``policy``."""
    members = segmentation.members()
    first = segmentation.first_correct()
    if first is None:
        raise Unsolvable("no approach reaches the reference answer")
    representative: dict[int | None, Approach | VerificationUnit] = {}
    out: list[Approach | VerificationUnit] = []
    survivors: list[int] = []  # positions in out of the units after the first correct one still kept
    for position, member in enumerate(members):
        rep = representative.get(member.cluster) if member.cluster is not None else None
        if member.cluster is not None and rep is None:
            representative[member.cluster] = member
        reason = None
        if position < first:
            if rep is not None:
                reason = f"redundant: same method as {_name(rep)}"
        elif position > first:
            if rep is not None:
                reason = f"redundant: same method as {_name(rep)}"
            elif policy.drop_incorrect_after_correct and not _is_correct(member) and (
                isinstance(member, VerificationUnit) or member.label == "incorrect"
            ):
                reason = "incorrect after the first correct approach"
            if reason is None and isinstance(member, VerificationUnit):
                survivors.append(len(out))
        out.append(replace(member, kept=reason is None, reason=reason))
    cap = policy.max_verification_units
    if cap is not None and len(survivors) > cap:
        # confirming before finding a fault, checking before musing, then the shortest (see _unit_rank)
        ranked = sorted(survivors, key=lambda k: _unit_rank(segmentation.thought, out[k]) + (k,))
        chosen = set(ranked[:cap])
        for k in survivors:
            if k not in chosen:
                out[k] = replace(out[k], kept=False, reason=f"over the cap of {cap} verification unit(s)")
    return _keep_one_unit(segmentation.with_members(out), policy.max_verification_units)


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
    unit by ``_unit_rank`` (confirming, working, shortest; redundant ones included: checking is structure).
    Under ``cap`` it takes the place of the kept units that do no checking, the worst ranked first."""
    thought, units = segmentation.thought, segmentation.units
    kept = [u for u in units if u.kept]
    if not units or any(_works(thought, u) for u in kept):
        return segmentation
    best = min(units, key=lambda u: _unit_rank(thought, u))
    if best.kept or (kept and not _works(thought, best)):
        return segmentation  # no unit does more checking than the ones kept
    over = len(kept) + 1 - cap if cap is not None else 0
    dropped = set(sorted(kept, key=lambda u: _unit_rank(thought, u), reverse=True)[: max(over, 0)])
    restored = []
    for u in units:
        if u is best:
            u = replace(u, kept=True, reason=None)
        elif u in dropped:
            u = replace(u, kept=False, reason=f"over the cap of {cap} verification unit(s): one that checks is kept")
        restored.append(u)
    return replace(segmentation, units=tuple(restored))
