"""DLCoT held to a gold standard: the shipped expert segmentation of 24 real traces, the first genuine check,
no real working cut, no dangling references, and the gold comparison itself."""

from __future__ import annotations

import json
import statistics

import pytest

from longcot import records
from longcot.dlcot.config import DlcotConfig, DlcotLineage
from longcot.dlcot.gold import GoldTrace, agreement, compare, load_gold, paragraph_spans, summarize
from longcot.dlcot.references import dangling, resolve
from longcot.dlcot.simplify import check_rank
from longcot.dlcot.structure import Approach, Segmentation, Span, VerificationUnit, reassemble, Segment
from longcot.dlcot.traces import read_traces
from longcot.dlcot.transform import DlcotTransform
from longcot.errors import InputError
from longcot.traces import SKY_MARKERS, parse_trace
from conftest import MATH_TRACES, REPO

GOLD = REPO / "jobs" / "data" / "dlcot_gold" / "math500_gold.jsonl"


@pytest.fixture(scope="module")
def gold_run():
    gold = load_gold(GOLD, MATH_TRACES)
    config = DlcotConfig()
    rows = [r for r in read_traces(MATH_TRACES, config.fields)
            if isinstance(r, dict) and records.problem_key(r["problem"]) in gold]
    return gold, DlcotTransform(config)(rows)


def test_the_shared_gold_set_agrees_with_the_simplification(gold_run):
    gold, out = gold_run
    found, missing = compare(out, gold)
    summary = summarize(found)
    assert not missing and summary["traces"] == 24
    # no real working cut: no trace loses more than 5% of the gold exploration
    assert summary["exploration_cut_over_limit"] == 0, [(a.id, a.exploration_cut) for a in found]
    # the first genuine check kept: at most a quarter of the traces lose more than 10% of what gold keeps
    assert summary["over_cut_over_limit"] <= 0.25 * len(found), sorted((a.over_cut, a.id) for a in found)[-8:]
    assert abs(summary["median_kept_share"] - summary["gold_median_kept_share"]) <= 0.05
    assert summary["boundary_within_2"] >= 0.75 * len(found)


def test_every_kept_character_is_verbatim_in_order_and_nothing_dangles(gold_run):
    _, out = gold_run
    for row in out:
        original = parse_trace(row["original_response"]).thought
        segments = [Segment(**{k: s[k] for k in ("kind", "start", "end", "approach", "cluster", "label", "kept",
                                                 "reason")}) for s in row["segments"]]
        assert parse_trace(row["response"]).thought == reassemble(original, segments), row["id"]
        detail = records.lineage_detail(row, DlcotLineage)
        assert detail.dangling_references == [], detail.dangling_references
        assert all(s["reason"] for s in row["segments"] if not s["kept"])  # every drop says why


def test_gold_measures_on_a_small_trace():
    thought = "\n\nRestate.\n\nWork: 2 + 2 = 4.\n\nCheck one: 4 - 2 = 2.\n\nCheck two.\n\nSo 4."
    paras = paragraph_spans(thought)
    assert len(paras) == 6 and thought[paras[2][0]:paras[2][1]] == "Work: 2 + 2 = 4."
    gold = GoldTrace("t-1", 6, 2, 2, ((0, 3), (5, 5)))
    # the simplification keeps the second check instead of the first
    cuts = [(0, paras[2][1] + 2, True), (paras[3][0], paras[3][1] + 2, False), (paras[4][0], paras[4][1] + 2, True),
            (paras[5][0], len(thought), True)]
    kinds = ["exploration", "verification", "verification", "conclusion"]
    row = {"response": f"{SKY_MARKERS[0]}{thought}{SKY_MARKERS[1]}", "problem_id": "p",
           "segments": [{"kind": k, "start": a, "end": b, "kept": kept} for k, (a, b, kept) in zip(kinds, cuts)]}
    a = agreement(row, gold)
    visible = [c for c in thought if not c.isspace()]
    assert a.exploration_cut == 0 and a.boundary_error == 0
    assert a.over_cut == pytest.approx(len("Checkone:4-2=2.") / len("Restate.Work:2+2=4.Checkone:4-2=2.So4."))
    assert a.under_cut == 1.0 and a.gold_kept_share == pytest.approx(
        len("Restate.Work:2+2=4.Checkone:4-2=2.So4.") / len(visible))


def test_a_bad_gold_file_is_named_with_its_line(tmp_path):
    bad = tmp_path / "gold.jsonl"
    bad.write_text(GOLD.read_text().splitlines()[0] + "\n{\"id\": \"math500-1\"}\n")
    with pytest.raises(InputError, match=r"gold.jsonl:2: not a gold entry"):
        load_gold(bad, MATH_TRACES)
    unknown = tmp_path / "unknown.jsonl"
    entry = json.loads(GOLD.read_text().splitlines()[0])
    unknown.write_text(json.dumps({**entry, "id": "math500-99999"}) + "\n")
    with pytest.raises(InputError, match="no trace with idx 99999"):
        load_gold(unknown, MATH_TRACES)


THOUGHT = ("\n\nSo I need a_2023 for a_n = (-1)^n.\n\n"
           "The terms alternate, so a_2023 = (-1)^2023 = -1.\n\n"
           "Let me check with n = 3: a_3 = (-1)^3 = -1, which matches the pattern.\n\n"
           "Let me also check with n = 5: a_5 = (-1)^5 = -1. Yes.\n\n"
           "Given that, and the check with n = 3, I think a_2023 = -1 is correct.\n\n")


def _units_segmentation(kept: tuple[bool, bool]) -> Segmentation:
    a = THOUGHT.index("The terms")
    u1, u2, c = THOUGHT.index("Let me check"), THOUGHT.index("Let me also"), THOUGHT.index("Given that")
    units = (VerificationUnit(1, u1, u2, "confirm", "-1", True, False, 2, kept=kept[0],
                              reason=None if kept[0] else "over the cap"),
             VerificationUnit(2, u2, c, "confirm", "-1", True, False, 3, kept=kept[1],
                              reason=None if kept[1] else "over the cap"))
    return Segmentation(THOUGHT, Span(0, a), None, (Approach(1, a, u1, "-1", "correct", 1),), units,
                        Span(c, len(THOUGHT)))


def test_a_kept_passage_that_cites_a_dropped_check_dangles_and_is_mended():
    seg = _units_segmentation((False, True))
    (ref,) = dangling(seg)
    assert ref.phrase == "the check with" and ref.where == "conclusion" and ref.points_at == "verification unit 1"
    mended, changes = resolve(seg, lambda u, k: check_rank(THOUGHT, u, k))
    assert dangling(mended) == [] and mended.units[0].kept and changes
    assert dangling(_units_segmentation((True, False))) == []  # the cited check is the one kept


def test_a_kept_check_that_cites_dropped_work_gives_way_to_one_that_does_not():
    thought = ("\n\nFind x if 2x = 8.\n\nDividing by 2, x = 4.\n\nWait, let me verify: 2 * 4 = 8. Yes.\n\n"
               "As verified above, x = 4; plugging in again, 2 * 4 = 8.\n\nAlternatively, 8 / 2 = 4. Yes.\n\nSo x = 4.\n\n")
    a, u1, u2, u3, c = (thought.index(t) for t in ("Dividing", "Wait", "As verified", "Alternatively", "So x"))
    units = (VerificationUnit(1, u1, u2, "confirm", "4", True, False, 2, kept=False, reason="over the cap"),
             VerificationUnit(2, u2, u3, "confirm", "4", True, False, 3),
             VerificationUnit(3, u3, c, "confirm", "4", True, True, 4, kept=False, reason="over the cap"))
    seg = Segmentation(thought, Span(0, a), None, (Approach(1, a, u1, "4", "correct", 1),), units, Span(c, len(thought)))
    assert [d.where for d in dangling(seg)] == ["verification unit 2"]
    mended, changes = resolve(seg, lambda u, k: check_rank(thought, u, k))
    assert [u.kept for u in mended.units] == [True, False, False] and dangling(mended) == []
    assert "refers to dropped text" in mended.units[1].reason and "kept instead" in changes[0]
    assert reassemble(thought, mended.segments()).count("As verified") == 0


def test_values_inside_formulas_never_end_the_exploration():
    from longcot.dlcot.answers import result_values
    from longcot.dlcot.rules import _intermediate
    from longcot.dlcot.answers import normal_form

    assert result_values("So, in general, a_k = (-1)^k times something.") == []  # a base of a power
    assert result_values("The terms alternate: (-1)^k, so the pattern is clear.") == []
    assert _intermediate("So, n + 13 = 81, and the term follows.", "81", normal_form("Find the 14th term."))
    assert not _intermediate("So x + y + z = 4 + 6 + 12 = 22.", "22", normal_form("What is $x + y + z$?"))


def test_the_median_kept_share_follows_gold_not_a_ratio_target(gold_run):
    """The retired 0.70 token-ratio target: DLCoT now keeps what gold keeps, about two thirds of the text."""
    _, out = gold_run
    ratios = [r["tokens_after"] / r["tokens_before"] for r in out]
    assert 0.55 <= statistics.median(ratios) <= 0.85


class _Editor:
    """A rewrite model that answers each seam with a fixed edit of it (what is under test is how the DLCoT
    rewrite step checks and applies edits, not a model's judgement)."""

    def __init__(self, edit):
        self.edit = edit

    def chat(self, conversations, **kwargs):
        from longcot.generate.backend import Completion

        second = [c[-1]["content"].rsplit("SECOND:\n", 1)[1] for c in conversations]
        return [Completion(self.edit(text), 10, 10, "stop") for text in second]


def test_rewrite_applies_small_edits_at_seams_and_refuses_the_rest():
    from longcot.dlcot.rewrite import rewrite_thought, seams

    segments = _units_segmentation((False, True)).segments()  # the n = 3 check dropped, the n = 5 one kept
    simplified = reassemble(THOUGHT, segments)
    found = seams(THOUGHT, segments)
    assert [simplified[s.start:s.end] for s in found] == ["Let me also check with n = 5: a_5 = (-1)^5 = -1. Yes."]
    kwargs = {"edit_budget": 0.05, "min_similarity": 0.8, "max_new_tokens": 64}
    smooth = _Editor(lambda t: t.replace("Let me also check", "Let me check"))
    text, report = rewrite_thought(simplified, found, smooth, **kwargs)
    assert report["edited"] == 1 and "Let me check with n = 5" in text and report["changed_share"] <= 0.05
    new_number = _Editor(lambda t: t.replace("n = 5", "n = 7"))  # changes the mathematics: refused
    assert rewrite_thought(simplified, found, new_number, **kwargs)[1]["fallback"].startswith("no seam edit")
    rewritten = _Editor(lambda t: "Now consider n = 5: a_5 = (-1)^5 = -1, which confirms it again.")
    assert rewrite_thought(simplified, found, rewritten, **kwargs)[0] is None  # too far from the paragraph
    assert "over the budget" in rewrite_thought(simplified, found, smooth, **{**kwargs, "edit_budget": 0.001})[1]["fallback"]
