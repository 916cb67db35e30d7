"""The ``verify`` stage: verify every sample on Ray, curate on the driver, write the report and exports.

1. Verification runs as a Ray Data ``map_batches`` over actors (``config.actors``), each holding a
   checker pool (math-verify, reasoning-gym), the sandbox (code) and the token counter.
2. Curation needs every row at once (duplicates, per-problem caps), so it runs on the driver.
3. Kept rows go to the output, every other row to the rejected file with its reason; the report
   (``stats.json``, ``token_lengths.png``, ``decontamination.json``) and any exports go to the stage's
   run directory.
"""

from __future__ import annotations

import time
from pathlib import Path

from longcot import records
from longcot.dataflow import BatchStage, nodes_of, read_input, rows_to_dataset
from longcot.recordfiles import RecordWriter, RejectedWriter
from longcot.stages import StageContext, StageResult
from longcot.verify.config import VerifyConfig

STAGE = "verify"


class VerifyBatch:
    """Ray Data actor: verifies a block of records and counts their tokens."""

    def __init__(self, config: dict):
        from longcot.verify.pool import CheckPool
        from longcot.verify.sandbox import Sandbox
        from longcot.verify.tokens import TokenCounter

        self.config = VerifyConfig.model_validate(config)
        self.pool = CheckPool(self.config.pool_size(), self.config.timeout_s)
        self.sandbox = Sandbox(self.config.sandbox)
        self.counter = TokenCounter(self.config.tokenizer)
        self.adapter = BatchStage(self._verify, STAGE)

    def _verify(self, rows: list[dict]) -> list[dict]:
        from longcot.verify.tokens import count_tokens
        from longcot.verify.verdicts import verify_records

        checked = verify_records(rows, self.config, pool=self.pool, sandbox=self.sandbox)
        return count_tokens(checked, self.counter)

    def __call__(self, table):
        return self.adapter(table)


def run(config: VerifyConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Verify, curate, report, export. Records in == kept (output) + rejected (with reasons)."""
    import ray.data

    from longcot.cluster import connect, require_resources
    from longcot.errors import InputError
    from longcot.verify.curate import curate
    from longcot.verify.export import export_records
    from longcot.verify.stats import print_stats, verification_stats, write_histogram

    if input_path is None:
        raise InputError("the verify stage needs input records (a generate output, or --input)")
    started = time.perf_counter()
    connect(ctx.ray)
    require_resources(config.resources, "verify")
    output = ctx.output_path(STAGE)
    rejected_path = ctx.rejected_path(STAGE)
    rejected_path.unlink(missing_ok=True)
    stage_dir = ctx.run_dir.stage_dir(STAGE)
    with RejectedWriter(rejected_path) as rejected:
        rows = read_input(input_path, STAGE, rejected)
        n_in = len(rows) + rejected.count
        verified: list[dict] = []
        nodes: list[str] = []
        if rows:
            ds = rows_to_dataset(rows, chunk_rows=config.batch_size)
            ds = ds.map_batches(
                VerifyBatch,
                fn_constructor_kwargs={"config": config.model_dump(mode="json")},
                compute=ray.data.ActorPoolStrategy(size=config.actors),
                batch_format="pyarrow",
                batch_size=None,
                **config.resources.ray_remote_args(),
            )
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for row in records.from_table(table):
                    if row.get("reject_reason"):
                        rejected.reject(STAGE, row["reject_reason"], {**row, "reject_reason": None})
                    else:
                        verified.append(row)
            nodes = nodes_of(ds)
        result = curate(verified, config)
        with RecordWriter(output, append=False) as out:
            for start in range(0, len(result.kept), 256):
                out.write(result.kept[start : start + 256])
            n_out = out.count
        for row, reason in result.dropped:
            rejected.reject(STAGE, f"{STAGE}: {reason}", row)
        n_rej = rejected.count
    kept_ids = {row["id"] for row in result.kept}
    stats = verification_stats(verified, kept_ids, result.dropped)
    artifacts = {
        "verify_stats": str(ctx.run_dir.write_json(f"{STAGE}/stats.json", stats)),
        "verify_decontamination": str(
            ctx.run_dir.write_json(f"{STAGE}/decontamination.json", result.report["decontamination"])
        ),
    }
    if config.histogram:
        artifacts["verify_histogram"] = str(write_histogram(verified, kept_ids, stage_dir / "token_lengths.png"))
    if config.export.formats:
        out_dir = Path(config.export.dir) if config.export.dir else stage_dir / "export"
        for fmt, path in export_records(result.kept, config.export, out_dir).items():
            artifacts[f"export_{fmt}"] = path
    if ctx.progress:
        print_stats(stats)
    summary = {
        "acceptance_rate": stats["acceptance_rate"],
        "correct_rate": stats["correct_rate"],
        "truncation_rate": stats["truncation_rate"],
        "verdicts": stats["verdicts"],
        "dropped": stats["dropped"],
        "contaminated_problems": result.report["decontamination"]["problems_removed"],
    }
    verdicts = ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in sorted(stats["verdicts"].items(), key=lambda x: -x[1]))
    stage_result = StageResult(STAGE, n_in, n_out, n_rej, output=str(output), artifacts=artifacts,
                               summary=summary, seconds=time.perf_counter() - started, nodes=nodes,
                               headlines=[f"{verdicts or 'nothing verified'}; kept {n_out}"
                                          + (" (correct only)" if config.keep_correct_only else "")])
    stage_result.check_counts()
    return stage_result
