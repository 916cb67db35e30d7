"""The ``problems`` stage: read every configured source into problem records."""

from __future__ import annotations

from pathlib import Path

from longcot.errors import InputError
from longcot.problems.config import ProblemsConfig
from longcot.problems.sources import Rejected, input_files, read_source
from longcot.recordfiles import RecordWriter, RejectedWriter
from longcot.stages import StageContext, StageResult

STAGE = "problems"


def run(config: ProblemsConfig, input_path: str | Path | None, ctx: StageContext) -> StageResult:
    """Write problem records; duplicates (same problem from the same source) are rejected, not repeated."""
    del input_path  # a source stage reads its sources, not a previous stage
    output = ctx.output_path(STAGE)
    seen: set[str] = set()
    for index, source in enumerate(config.sources):
        if source.kind == "file" and not Path(source.path).exists():
            raise InputError(f"no such file or directory (problems.sources[{index}].path)", source.path)
    with RecordWriter(output, append=False) as out, RejectedWriter(ctx.rejected_path(STAGE)) as rejected:
        def new_problems(items):
            for item in items:
                if isinstance(item, Rejected):
                    rejected.reject(STAGE, item.reason, {"raw": item.raw})
                elif item["id"] in seen:
                    rejected.reject(STAGE, f"duplicate problem (id {item['id']}) from {item['source']}", item)
                else:
                    seen.add(item["id"])
                    yield item

        for source in config.sources:
            for f in input_files(source):
                ctx.run_dir.add_input(f)
            out.write_stream(new_problems(read_source(source)))
        n_out, n_rej = out.count, rejected.count
    # every item a source yields is written or rejected, so the records in are the sum
    return StageResult(STAGE, n_out + n_rej, n_out, n_rej, output=str(output))
