"""DLCoT settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from longcot.generate.config import GenerateConfig, OpenAISettings
from longcot.models import DEFAULT_MODEL
from longcot.records import Lineage
from longcot.settings import StageResources, StrictModel


class PolicyConfig(StrictModel):
    """What simplification keeps, and what happens to erroneous spans inside kept approaches."""

    name: Literal["keep_first_correct"] = Field(
        "keep_first_correct",
        description="keep_first_correct: keep distinct approaches up to the first correct one, then only the "
        "first member of each method cluster. A trace with no correct approach is skipped as unsolvable.",
    )
    drop_incorrect_after_correct: bool = Field(
        True, description="Also drop approaches and units after the first correct one that land on a wrong answer "
        "(the paper's configured run)."
    )
    max_verification_units: int | None = Field(
        1, ge=1, description="Keep at most this many verification units after the first correct approach (null: no "
        "cap, as in the paper's run, one per cluster of the same check): the first genuine checks, a unit that "
        "re-checks the answer before one that solves the problem another way, and one that calculates anew before "
        "one that only restates earlier work. A unit whose kept text would refer to a dropped one gives way to "
        "the next (or brings it back). At least one unit that checks is kept where the original had one."
    )
    errors: Literal["keep", "remove_span", "remove_approach"] = Field(
        "keep", description="Erroneous spans (a step that is wrong and later corrected) inside kept approaches: "
        "keep them (the paper's configured run), remove_span (drop the wrong step through the sentence that "
        "flags it), or remove_approach (drop every approach with one, except the first correct)."
    )


class JudgeConfig(StrictModel):
    """The judge model the llm segmenter asks to label the steps of a thought."""

    backend: Literal["hf", "openai"] = Field("hf", description="hf: a local transformers model (the generate "
                                             "stage's HFGenerator); openai: an OpenAI-compatible chat endpoint.")
    model: str = Field(DEFAULT_MODEL, description="embedded:NAME, a hub id or a local path (hf); the served "
                       "model name (openai, unless openai.served_model is set).")
    openai: OpenAISettings = Field(default_factory=OpenAISettings, description="Endpoint, key variable, rate "
                                   "limits and retries of the openai backend (as for the generate stage).")
    max_tokens: int = Field(512, ge=16, description="Most tokens the judge may write per thought.")
    max_step_chars: int = Field(300, ge=40, description="Each step is shown to the judge cut to this many characters.")
    batch_size: int = Field(4, ge=1, description="Thoughts per judge call.")


class RewriteSettings(StrictModel):
    """DLCoT's optional last step: a rewrite model smooths the seams where content was removed, with minimal
    edits; the result is used only within the edit budget and when it still verifies (see dlcot.rewrite)."""

    generate: GenerateConfig = Field(
        default_factory=lambda: GenerateConfig(backend="hf", system_prompt=""),
        description="The rewrite model, as a generate config: hf (a local model) or openai (any "
        "OpenAI-compatible endpoint); its model, adapter or endpoint settings.",
    )
    edit_budget: float = Field(0.05, gt=0, le=1, description="Most characters of the thought the edits may "
                               "change, as a share; above it the verbatim simplification is kept.")
    min_similarity: float = Field(0.8, gt=0, le=1, description="A seam's new paragraph is used only this similar "
                                  "to the original (difflib ratio), every number and formula character kept.")
    max_new_tokens: int = Field(256, ge=8, description="Most tokens the rewrite model writes per seam.")


class GoldSettings(StrictModel):
    """An expert gold segmentation to measure the simplification against (see dlcot.gold)."""

    path: str = Field(..., description="Gold JSONL, e.g. jobs/data/dlcot_gold/math500_gold.jsonl.")
    traces: str = Field(..., description="The trace file the gold was made from (its `idx` column names the "
                        "gold entries), e.g. jobs/data/traces/math500_sky-t1-27b.jsonl.")


class TraceFields(StrictModel):
    """Which column of a raw trace file holds each record field."""

    problem: str = Field("problem", description="Column with the problem statement.")
    reference_answer: str = Field("reference_answer", description="Column with the reference answer.")
    response: str = Field("response", description="Column with the model's full response.")
    id: str | None = Field("idx", description="Column with a source id, kept in metadata (null: none).")


class DlcotConfig(StrictModel):
    """Segment, simplify and optimise the error states of long CoT traces."""

    input: str | None = Field(
        None, description="A raw trace file (JSONL/Parquet with problem, reference_answer and response columns) "
        "read instead of the previous stage's records, e.g. jobs/data/traces/math500_sky-t1-27b.jsonl."
    )
    fields: TraceFields = Field(default_factory=TraceFields, description="Column names of a raw trace `input`.")
    segmenter: Literal["rules", "llm"] = Field("rules", description="How the thought is segmented: rules "
                                               "(offline, verbatim) or llm (a judge model; falls back to rules).")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The judge of the llm segmenter.")
    tokenizer: str = Field(DEFAULT_MODEL, description="Student model whose tokenizer counts tokens_before and "
                           "tokens_after (the thought's tokens; the lineage also has the whole response's).")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description=PolicyConfig.__doc__)
    cluster_threshold: float = Field(0.5, gt=0, le=1, description="rules clustering: share of an approach's "
                                     "content words and numbers already in an earlier one with the same answer at "
                                     "which both count as the same method (re-checks always join the work they check).")
    replace_response: bool = Field(
        True, description="For transformed records, move the original text to original_response and put the DLCoT "
        "text in response, so later stages (train) use the simplified trace. dlcot_response is set either way."
    )
    on_skip: Literal["keep", "reject"] = Field(
        "keep", description="Skipped records (no markers, truncated, unsolvable, ...): keep them unchanged in the "
        "output with dlcot_skip_reason set, or send them to the rejected file with that reason."
    )
    require_correct: bool = Field(
        True, description="Skip a trace whose final answer does not verify (uses the verify stage's verdict when "
        "present, else checks it)."
    )
    max_thought_chars: int = Field(200_000, ge=1000, description="Longer thoughts are skipped (too_long).")
    check_ratio: float = Field(0.90, ge=0, le=1, description="Segmentation check: SequenceMatcher quick_ratio "
                               "of the joined segments against the thought that passes.")
    check_jaccard: float = Field(0.95, ge=0, le=1, description="Segmentation check: word-set Jaccard that passes.")
    verify_timeout_s: float = Field(5.0, gt=0, description="Timeout of one math-verify answer check.")
    batch_size: int = Field(32, ge=1, description="Records per Ray Data batch (one task; the llm judge is asked "
                            "judge.batch_size thoughts at a time within it).")
    concurrency: int | None = Field(None, ge=1, description="Most transform tasks running at once (null: as many "
                                    "as the cluster fits).")
    resources: StageResources = Field(default_factory=StageResources, description="What one transform task asks "
                                      "Ray for (give it a GPU for an hf judge on a GPU node).")
    rewrite: RewriteSettings | None = Field(None, description="Smooth the seams with a rewrite model (null: the "
                                            "simplification stays verbatim).")
    gold: GoldSettings | None = Field(None, description="Measure the simplification against an expert gold "
                                      "segmentation: gold.json in the stage directory, the summary and the report.")


class DlcotLineage(Lineage, stage="dlcot"):
    """What the transform did to one thought: the segmenter, the policy, token counts before and after (the
    thought's, the response's and each segment kind's), what was kept, the references and the rewrite; or,
    for a skipped record, why (``skipped``, ``reason``)."""

    segmenter: str = Field(description="The segmenter configured (rules or llm).")
    judge: dict[str, Any] | None = Field(None, description="llm: the judge's backend and model.")
    fallback: str | None = Field(None, description="Why the rules segmented a thought meant for the judge.")
    skipped: str | None = Field(None, description="A skipped record: the skip's code.")
    reason: str | None = Field(None, description="A skipped record: why, in words.")
    segmented_by: str = Field("rules", description="What segmented the thought in the end.")
    policy: dict[str, Any] = Field({}, description="What the policy keeps (dlcot.policy).")
    tokenizer: str | None = Field(None, description="The tokenizer the counts are in.")
    tokens_before: int | None = Field(None, description="Thought tokens before.")
    tokens_after: int | None = Field(None, description="Thought tokens after.")
    ratio: float | None = Field(None, description="tokens_after / tokens_before.")
    response_tokens_before: int | None = Field(None, description="Response tokens before.")
    response_tokens_after: int | None = Field(None, description="Response tokens after.")
    approaches: int = Field(0, description="Approaches found in the exploration.")
    approaches_kept: int = Field(0, description="Approaches kept.")
    first_correct_approach: int | None = Field(None, description="Index of the first approach that is right.")
    units: int = Field(0, description="Verification units found.")
    units_kept: int = Field(0, description="Verification units kept.")
    clusters: int = Field(0, description="Redundancy clusters among approaches and units.")
    error_spans: int = Field(0, description="Spans marked wrong and corrected later.")
    references_resolved: list[str] = Field([], description="Each change made so no kept text points at dropped text.")
    dangling_references: list[dict[str, Any]] = Field([], description="References to dropped text left over.")
    check: dict[str, float] = Field({}, description="How closely the segments rebuild the thought.")
    kind_tokens_before: dict[str, int] = Field({}, description="Tokens per segment kind before.")
    kind_tokens_after: dict[str, int] = Field({}, description="Tokens per segment kind after.")
    slow_answer_checks: int = Field(0, description="Answer checks that took the slow path.")
    answer_check_timeouts: int = Field(0, description="Answer checks that timed out.")
    replaced_response: bool = Field(False, description="The response field was replaced by the simplified one.")
    rewrite: dict[str, Any] | None = Field(None, description="The rewrite step's report (dlcot.rewrite).")
