"""The ``verify`` stage: verify every sample on Ray, curate on the driver, write the report and exports.

1. Verification runs on the shared runner (``dataflow.run_row_stage``) over a pool of ``config.actors``
   actors, each holding a checker pool (math-verify, reasoning-gym), the sandbox (code) and the token counter.
2. Curation needs every row at once (duplicates, per-problem caps), so it is the runner's finalize hook,
   on the driver.
3. Kept rows go to the output, every other row to the rejected file with its reason; the report
   (``stats.json``, ``token_lengths.png``, ``decontamination.json``) and any exports go to the stage's
   run directory.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from longcot.dataflow import run_row_stage
from longcot.rundir import write_json
from longcot.stages import StageContext, StageResult
from longcot.verify.config import VerifyConfig

STAGE = "verify"


class VerifyBatch:
    """The batch function of the verify actors: verifies records and counts their tokens. Each actor builds
    one (a checker pool, the sandbox, the token counter) and keeps it for every block it gets."""

    def __init__(self, config: dict):
        from longcot.verify.pool import CheckPool
        from longcot.verify.sandbox import Sandbox
        from longcot.tokens import TokenCounter

        self.config = VerifyConfig.model_validate(config)
        self.pool = CheckPool(self.config.pool_size(), self.config.timeout_s)
        self.sandbox = Sandbox(self.config.sandbox)
        self.counter = TokenCounter(self.config.tokenizer)

    def __call__(self, rows: list[dict]) -> list[dict]:
        from longcot.verify.verdicts import verify_records

        return self.counted(verify_records(rows, self.config, pool=self.pool, sandbox=self.sandbox))

    def counted(self, rows: list[dict]) -> list[dict]:
        """Verified rows with their thought and solution tokens counted."""
        from longcot.tokens import count_tokens

        return count_tokens(rows, self.counter)


def verify_on_ray(rows: list[dict], config: VerifyConfig, *, stage: str, rejected, output=None, checker=None,
                  ray_config=None, progress: bool = True):
    """``rows`` verified over Ray by ``config.actors`` verify actors (``VerifyBatch``, or those ``checker`` builds)
    and written to ``output`` (if any); returns them in their places (``None`` for a row whose check raised: it went
    to ``rejected``) with the run's ``StageResult``. For what verifies rows it already holds: eval's scoring, the
    sweep's unverified input, ``longcot eval-check``. ``output`` and ``rejected``: paths, or open writers."""
    done: list[dict] = []

    def keep(rows: list[dict]):
        done.extend(rows)
        return rows, []

    result = on_verify_actors(config, checker, stage=stage, input_path=rows, output_path=output,
                              rejected_path=rejected, finalize=keep, ordered=True, progress=progress,
                              ray_config=ray_config)
    return in_place(rows, done), result


def on_verify_actors(config: VerifyConfig, checker=None, **stage):
    """The shared runner mapping ``checker`` (default: ``VerifyBatch``) over a pool of ``config.actors`` actors,
    ``config.batch_size`` rows a block; ``stage``: the rest of ``run_row_stage``'s arguments."""
    return run_row_stage(checker or partial(VerifyBatch, config.model_dump(mode="json")), batch=True,
                         batch_size=None, chunk_rows=config.batch_size, actors=config.actors,
                         resources=config.resources, **stage)


def in_place(rows: list[dict], checked: list[dict]) -> list[dict | None]:
    """``checked`` (``rows`` verified, in their order, less the rejected ones) aligned with ``rows``: ``None`` in
    the place of a rejected row. Matched in turn, not through a dict of ids: two rows may share an id (two
    outputs joined, a benchmark that lists a problem twice), and neither may take the other's verdict."""
    out, pending = [], iter(checked)
    waiting = next(pending, None)
    for row in rows:
        if waiting is not None and waiting["id"] == row["id"]:
            out.append(waiting)
            waiting = next(pending, None)
        else:
            out.append(None)
    return out


def run(config: VerifyConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Verify, curate, report, export. Records in == kept (output) + rejected (with reasons)."""
    from longcot.errors import InputError
    from longcot.verify.curate import curate
    from longcot.verify.export import export_records
    from longcot.verify.stats import print_stats, verification_stats, write_histogram

    if input_path is None:
        raise InputError("the verify stage needs input records (a generate output, or --input)")
    verified: list[dict] = []
    result = None  # the Curated, set by the runner's finalize on the driver

    def curated(rows: list[dict]):
        nonlocal result
        verified.extend(rows)
        result = curate(rows, config)
        return result.kept, result.dropped

    stage_result = on_verify_actors(
        config, stage=STAGE, input_path=input_path, output_path=ctx.output_path(STAGE),
        rejected_path=ctx.rejected_path(STAGE), finalize=curated, progress=ctx.progress, ray_config=ctx.ray,
    )
    stage_dir = ctx.run_dir.stage_dir(STAGE)
    kept_ids = {row["id"] for row in result.kept}
    stats = verification_stats(verified, kept_ids, result.dropped)
    artifacts = {
        "verify_stats": str(write_json(stage_dir / "stats.json", stats)),
        "verify_decontamination": str(write_json(stage_dir / "decontamination.json", result.report["decontamination"])),
    }
    if config.histogram:
        artifacts["verify_histogram"] = str(write_histogram(verified, kept_ids, stage_dir / "token_lengths.png"))
    if config.export.formats:
        out_dir = Path(config.export.dir) if config.export.dir else stage_dir / "export"
        for fmt, path in export_records(result.kept, config.export, out_dir).items():
            artifacts[f"export_{fmt}"] = path
    if ctx.progress:
        print_stats(stats)
    headline_keys = ("acceptance_rate", "correct_rate", "truncation_rate", "verdicts", "dropped")
    summary = {key: stats[key] for key in headline_keys}
    summary["contaminated_problems"] = result.report["decontamination"]["problems_removed"]
    verdicts = ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in sorted(stats["verdicts"].items(), key=lambda x: -x[1]))
    stage_result.artifacts, stage_result.summary = artifacts, summary
    stage_result.headlines = [f"{verdicts or 'nothing verified'}; kept {stage_result.records_out}"
                              + (" (correct only)" if config.keep_correct_only else "")]
    return stage_result
