"""The ``perturb`` stage: ``perturb_record`` mapped over the input records with Ray Data.

Records in == records out + rejected. The summary says how much changed against how much could have
(numbers, keyword occurrences or steps), so the achieved ratio can be read off the manifest.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

from longcot import records
from longcot.dataflow import run_row_stage
from longcot.errors import InputError
from longcot.perturb.config import STRUCTURE_KINDS, PerturbConfig, PerturbLineage
from longcot.perturb.perturbation import STAGE, Donors, perturb_record
from longcot.recordfiles import good_records
from longcot.stages import StageContext, StageResult

# lineage key holding the number of things that could have been perturbed, per kind
_CANDIDATES = {"corrupt_digits": "numbers", "remove_keywords": "occurrences", **dict.fromkeys(STRUCTURE_KINDS, "steps")}


def run(config: PerturbConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Perturb every record of ``input_path`` into ``ctx.output_path("perturb")``."""
    if input_path is None:
        raise InputError("the perturb stage needs input records (give --input, or run verify before it)")
    donors = None
    if config.kind in ("insert_steps", "wrong_answer"):
        donors = Donors.from_records(good_records(input_path), config)
    result = run_row_stage(
        partial(perturb_record, config=config, donors=donors), stage=STAGE, input_path=input_path,
        output_path=ctx.output_path(STAGE), rejected_path=ctx.rejected_path(STAGE), resources=config.resources,
        progress=ctx.progress, ray_config=ctx.ray,
    )
    result.summary = summarize(result.output, config)
    return result


def summarize(output: str | Path, config: PerturbConfig) -> dict:
    """Totals over the output's lineage: what changed and out of how many candidates."""
    found = (records.lineage_detail(row, PerturbLineage) for row in good_records(output))
    details = [detail for detail in found if detail is not None]
    affected = sum(detail.affected for detail in details)
    sources = Counter(detail.source for detail in details if detail.source)
    summary: dict = {"kind": config.kind, "ratio": config.ratio, "seed": config.seed, "affected": affected}
    if config.kind in _CANDIDATES:
        candidates = sum(getattr(detail, _CANDIDATES[config.kind]) for detail in details)
        summary["candidates"] = candidates
        summary["achieved_ratio"] = round(affected / candidates, 4) if candidates else None
        if config.kind == "insert_steps":
            summary["achieved_ratio_note"] = "inserted steps per original step"
    if sources:
        summary["sources"] = dict(sources)
    return summary
