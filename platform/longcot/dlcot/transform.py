"""The DLCoT transform of a batch of trace records: segment, cluster, simplify, optimise errors, reassemble.

``DlcotTransform`` is a plain callable on a list of records (no Ray in here); ``stage.py`` maps it over a
dataset. For each record it either

- transforms it: ``dlcot_response`` (the response with its thought simplified; markers and solution
  byte-identical), ``segments``, ``tokens_before`` / ``tokens_after`` (tokens of the thought, the part
  DLCoT rewrites, with the student's tokenizer; the lineage also has the whole response's), a ``dlcot``
  lineage entry; with ``replace_response`` the DLCoT text also becomes
  ``response`` and the original moves to ``original_response``; or
- skips it: ``dlcot_skip_reason`` is ``code: detail`` (codes in ``SKIP_CODES``) and the record is
  otherwise unchanged, or, with ``on_skip: reject``, it goes to the rejected file with that reason.

Nothing raises for a bad record: every failure is a skip reason.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from dataclasses import asdict, dataclass
from typing import Any

from longcot.dlcot.answers import ReferenceMatcher, reference_readable
from longcot.dlcot.clustering import cluster_approaches
from longcot.dlcot.config import DlcotConfig, DlcotLineage
from longcot.dlcot.rules import SegmentationError
from longcot.dlcot.segmenter import Segmenter, Thought, make_segmenter
from longcot.dlcot.references import dangling, resolve
from longcot.dlcot.simplify import Unsolvable, check_rank, optimise_errors, simplify
from longcot.dlcot.structure import KINDS, Segmentation, check_segmentation, reassemble
from longcot.records import add_lineage
from longcot.verify import match_answers
from longcot.verify.math import final_answer
from longcot.traces import ParsedTrace, parse_trace, replace_thought

STAGE = "dlcot"
SKIP_CODES = (
    "no_response",  # the record has no response text
    "no_markers",  # no thought/solution markers: the thought cannot be told from the answer
    "truncated",  # the response stops before its closing marker (or hit max_tokens)
    "empty_thought",  # the thought section is empty
    "too_long",  # the thought is longer than max_thought_chars
    "no_reference",  # no reference answer to label approaches against
    "reference_unparseable",  # math-verify cannot read the reference answer
    "not_correct",  # the trace's own final answer does not verify (require_correct)
    "segmentation_failed",  # the thought has too little structure to segment
    "segmentation_check_failed",  # the segments, joined, do not reproduce the thought
    "unsolvable",  # no approach reaches the reference answer
    "no_longer_verifies",  # the simplified trace's answer does not verify (never expected)
    "error",  # an unexpected error while transforming this record (a bug): the record is left alone
)


@dataclass
class _Item:
    row: dict
    parsed: ParsedTrace
    matcher: ReferenceMatcher


class Skip(Exception):
    """A record DLCoT leaves alone; ``code`` is one of ``SKIP_CODES``."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def _unreadable(reference: str) -> None:
    """Raise the ``reference_unparseable`` skip when that, not the trace, is why nothing matched it.

    Only asked on this failure path: parsing a reference costs math-verify's LaTeX grammar (~0.1 s)."""
    if not reference_readable(str(reference)):
        raise Skip("reference_unparseable", f"math-verify cannot read the reference answer {str(reference)[:80]!r}")


def _set(**fields) -> dict[str, Any]:
    """The optional lineage fields that have a value: the others stay unset, out of the record's detail."""
    return {k: v for k, v in fields.items() if v}


@functools.lru_cache(maxsize=2)
def _tokenizer(ref: str):
    from longcot.models import text_tokenizer

    return text_tokenizer(ref)


class DlcotTransform:
    """Batch function: records in, the same records with DLCoT fields (or a skip reason) out.

    Answers are checked in the verify stage's timeout-safe checker pool; ``segmenter`` defaults to
    ``make_segmenter(config)`` (tests may pass their own). The tokenizer, checker pool and judge are created on
    first use, once per process.
    """

    def __init__(self, config: DlcotConfig, *, segmenter: Segmenter | None = None):
        self.config = config
        self.segmenter = segmenter or make_segmenter(config)

    def __call__(self, rows: list[dict]) -> list[dict]:
        prepared = [self._guarded(row, self._prepare, row) for row in rows]
        items = [item for item in prepared if isinstance(item, _Item)]
        segmented = iter(self._segment(items))
        return [self._guarded(item.row, self._transform, item, next(segmented)) if isinstance(item, _Item) else item
                for item in prepared]

    def _guarded(self, row: dict, step, *args):
        """``step(*args)``, or ``row`` skipped with the reason (and the fallback of the segmentation ``step``
        was given, if any); a bug must cost one record, not the batch."""
        try:
            return step(*args)
        except Skip as skip:
            return self._skipped(row, skip, args[-1])
        except Exception as exc:
            return self._skipped(row, Skip("error", f"{type(exc).__name__}: {exc}"[:300]))

    def _segment(self, items: list[_Item]) -> list[Segmentation | SegmentationError]:
        if not items:
            return []
        thoughts = [Thought(i.parsed.thought, i.row.get("problem"), i.matcher) for i in items]
        try:
            return self.segmenter.segment(thoughts)
        except Exception as exc:
            return [SegmentationError(f"segmenter failed: {type(exc).__name__}: {exc}"[:300]) for _ in items]

    # -- before segmenting: everything that makes a record unusable -------------------------------------

    def _prepare(self, row: dict) -> _Item:
        response = row.get("response")
        if not response or not response.strip():
            raise Skip("no_response")
        parsed = parse_trace(response, row.get("finish_reason"))
        if parsed.markers == "none":
            raise Skip("no_markers", "no thought/solution markers (sky or think) in the response")
        if parsed.truncated:
            raise Skip("truncated", "the response stops before its closing marker")
        if not parsed.thought.strip():
            raise Skip("empty_thought")
        if len(parsed.thought) > self.config.max_thought_chars:
            raise Skip("too_long", f"thought has {len(parsed.thought)} characters (max_thought_chars "
                                   f"{self.config.max_thought_chars})")
        reference = str(row.get("reference_answer") or "").strip()
        if not reference:
            raise Skip("no_reference")
        matcher = ReferenceMatcher(reference, functools.partial(match_answers, timeout_s=self.config.verify_timeout_s,
                                                                workers=1))
        if self.config.require_correct:
            verdict = row.get("verdict")
            if row.get("correct") is False or (verdict is not None and verdict != "correct"):
                raise Skip("not_correct", f"verify verdict {verdict or 'incorrect'}")
            if row.get("correct") is None:
                answer = final_answer(parsed).text
                if not matcher.match(answer):
                    _unreadable(reference)
                    raise Skip("not_correct", f"final answer {str(answer)[:80]!r} does not match the reference")
        return _Item(row, parsed, matcher)

    # -- the transform -------------------------------------------------------------------------------

    def _transform(self, item: _Item, seg: Segmentation | SegmentationError) -> dict:
        if isinstance(seg, SegmentationError):
            raise Skip("segmentation_failed", str(seg))
        config, row, parsed = self.config, item.row, item.parsed
        pieces = [parsed.thought[s.start : s.end] for s in seg.segments()]
        check = check_segmentation(parsed.thought, pieces, min_ratio=config.check_ratio, min_jaccard=config.check_jaccard)
        if not check.passed:
            raise Skip("segmentation_check_failed", f"quick_ratio {check.quick_ratio}, jaccard {check.jaccard}")
        seg = cluster_approaches(seg, threshold=config.cluster_threshold)
        try:
            seg = optimise_errors(simplify(seg, config.policy), config.policy)
        except Unsolvable as exc:
            _unreadable(row["reference_answer"])
            raise Skip("unsolvable", str(exc)) from None
        seg, resolved = resolve(seg, lambda unit, k: check_rank(parsed.thought, unit, k))
        segments = seg.segments()
        new_thought = reassemble(parsed.thought, segments)
        new_response = replace_thought(row["response"], parsed, new_thought)
        new_parsed = parse_trace(new_response, row.get("finish_reason"))
        if not item.matcher.match(final_answer(new_parsed).text):
            raise Skip("no_longer_verifies", "the simplified trace's final answer does not match the reference")
        rewrite_report = None
        if config.rewrite is not None:
            new_response, new_parsed, rewrite_report = self._rewrite(item, new_thought, segments, new_response,
                                                                     new_parsed)
            new_thought = new_parsed.thought

        counts = self._count_tokens(row["response"], parsed, new_response, new_parsed, segments)
        tokens_before, tokens_after = counts["tokens_before"], counts["tokens_after"]
        out = dict(row, dlcot_response=new_response, dlcot_skip_reason=None, segments=[asdict(s) for s in segments],
                   tokens_before=tokens_before, tokens_after=tokens_after)
        if config.replace_response:
            out["original_response"] = row.get("original_response") or row["response"]
            out["response"] = new_response
            out["output_tokens"] = counts["response_tokens_after"]
            if row.get("thought") is not None:
                out["thought"] = new_thought
                out["thought_tokens"] = tokens_after
        approaches, units = seg.approaches, seg.units
        return add_lineage(out, DlcotLineage(
            **self.segmenter.describe(),
            **counts,
            **_set(fallback=seg.fallback, rewrite=rewrite_report),
            segmented_by=seg.segmenter,
            policy=config.policy.model_dump(),
            tokenizer=config.tokenizer,
            ratio=round(tokens_after / tokens_before, 4) if tokens_before else None,
            approaches=len(approaches),
            approaches_kept=sum(a.kept for a in approaches),
            first_correct_approach=next((a.index for a in approaches if a.correct), None),
            units=len(units),
            units_kept=sum(u.kept for u in units),
            clusters=len({m.cluster for m in seg.members()}),
            error_spans=sum(len(m.errors) for m in seg.members()),
            references_resolved=resolved,
            dangling_references=[{k: v for k, v in asdict(d).items() if k != "at"} for d in dangling(seg)],
            check={"quick_ratio": check.quick_ratio, "jaccard": check.jaccard},
            slow_answer_checks=item.matcher.slow_checks,
            answer_check_timeouts=item.matcher.timeouts,
            replaced_response=config.replace_response,
        ))

    def _rewrite(self, item: _Item, thought: str, segments, response: str, parsed: ParsedTrace):
        """The rewrite step (``dlcot.rewrite``): the smoothed response when it is within budget and still
        verifies, else the verbatim one; and the report for the lineage."""
        from longcot.dlcot.rewrite import rewrite_thought, seams
        from longcot.generate.backends import local_engine

        settings = self.config.rewrite
        found = seams(item.parsed.thought, segments)
        try:
            engine = local_engine(settings.generate)
        except Exception as exc:
            return response, parsed, {"seams": len(found), "edited": 0,
                                      "fallback": f"no rewrite model: {type(exc).__name__}: {exc}"[:300]}
        rewritten, report = rewrite_thought(thought, found, engine, edit_budget=settings.edit_budget,
                                            min_similarity=settings.min_similarity,
                                            max_new_tokens=settings.max_new_tokens)
        report["model"] = settings.generate.model
        if rewritten is None:
            return response, parsed, report
        candidate = replace_thought(response, parsed, rewritten)
        candidate_parsed = parse_trace(candidate, item.row.get("finish_reason"))
        if not item.matcher.match(final_answer(candidate_parsed).text):
            return response, parsed, {**report, "fallback": "the rewritten trace no longer verifies"}
        return candidate, candidate_parsed, {**report, "used": True}

    def _count_tokens(self, response: str, parsed: ParsedTrace, new_response: str, new_parsed: ParsedTrace,
                      segments) -> dict[str, Any]:
        """Token counts with the student's tokenizer, from one tokenization (with offsets) of the response
        before and one after: thought tokens are those that start inside the thought (as the eval stage
        counts them), each attributed to the segment it starts in; ``solution`` is every token outside."""
        enc = _tokenizer(self.config.tokenizer)([response, new_response], add_special_tokens=False,
                                                return_offsets_mapping=True, verbose=False)
        before_starts, after_starts = ([a for a, _ in offsets] for offsets in enc["offset_mapping"])
        kinds_before = dict.fromkeys((*KINDS, "solution"), 0)
        kinds_after = dict(kinds_before)
        offset = parsed.thought_start
        seg_starts = [offset + s.start for s in segments]
        for start in before_starts:
            k = bisect_right(seg_starts, start) - 1
            inside = k >= 0 and start < offset + segments[k].end
            kind, kept = (segments[k].kind, int(segments[k].kept)) if inside else ("solution", 1)
            kinds_before[kind] += 1
            kinds_after[kind] += kept
        t0, t1 = new_parsed.thought_start, new_parsed.thought_end
        return {  # named as the lineage names them
            "tokens_before": sum(kinds_before[k] for k in KINDS),
            "tokens_after": sum(t0 <= a < t1 for a in after_starts),
            "response_tokens_before": len(before_starts),
            "response_tokens_after": len(after_starts),
            "kind_tokens_before": kinds_before,
            "kind_tokens_after": kinds_after,
        }

    def _skipped(self, row: dict, skip: Skip, seg: object = None) -> dict:
        reason = str(skip)
        out = dict(row, dlcot_response=None, dlcot_skip_reason=reason, segments=None, tokens_before=None,
                   tokens_after=None)
        out = add_lineage(out, DlcotLineage(skipped=skip.code, reason=reason, segmenter=self.config.segmenter,
                                            **_set(fallback=seg.fallback if isinstance(seg, Segmentation) else None)))
        if self.config.on_skip == "reject":
            out["reject_reason"] = f"{STAGE}: {reason}"
        return out
