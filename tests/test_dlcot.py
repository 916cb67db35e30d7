"""DLCoT, unit level: the structure, the rules segmenter, clustering, the policies, reassembly, the llm
segmenter's parsing and fallback, skip reasons for bad input, the report. No Ray; real tokenizer and the
verify stage's real checker pool."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from longcot import records
from longcot.dlcot.answers import ReferenceMatcher, reference_readable, result_values, stated_answers
from longcot.dlcot.clustering import cluster_approaches
from longcot.dlcot.config import DlcotConfig, DlcotLineage, PolicyConfig
from longcot.dlcot.llm import anchor_labels, parse_labels, segment_llm
from longcot.dlcot.report import build_report, write_report
from longcot.dlcot.rules import SegmentationError, read_steps, segment_rules
from longcot.dlcot.segmenter import LLMSegmenter, Thought
from longcot.dlcot.simplify import Unsolvable, optimise_errors, simplify
from longcot.dlcot.structure import (
    Approach,
    Segmentation,
    Span,
    VerificationUnit,
    check_segmentation,
    reassemble,
)
from longcot.dlcot.traces import read_traces
from longcot.dlcot.transform import DlcotTransform
from longcot.errors import ConfigError, InputError
from longcot.generate.backend import Completion
from longcot.recordfiles import BadLine
from longcot.verify import match_answers
from longcot.traces import SKY_MARKERS, parse_trace

PROBLEM = "Find the value of 2 + 3 * 4."
THOUGHT = """

So I have this problem: find the value of 2 + 3 * 4. I need to follow the order of operations.

First, I need to remember that multiplication comes before addition.

Let me compute 2 + 3 = 5 first, then 5 * 4 = 20.

Wait, that's wrong. Multiplication comes first, so I should not add first.

So 3 * 4 = 12, and 2 + 12 = 14.

Therefore, the answer is 14.

Wait a minute, let me double-check that. 3 * 4 = 12 and 2 + 12 = 14. Yes, that seems correct.

Alternatively, I could count it as repeated addition: two plus four plus four plus four gives fourteen, which agrees.

Just to be sure, let me verify once more: 3 * 4 = 12, then 12 + 2 = 14. Yes.

I think that's the final answer.

"""
SOLUTION = "\n\nMultiply first: 3 × 4 = 12, then add 2.\n\nThe answer is \\boxed{14}.\n\n"
B_T, E_T, B_S, E_S = SKY_MARKERS
RESPONSE = f"{B_T}{THOUGHT}{E_T}{B_S}{SOLUTION}{E_S}"


def check(pairs):
    return match_answers(list(pairs), 5.0, workers=1)


def matcher(reference: str = "14") -> ReferenceMatcher:
    return ReferenceMatcher(reference, check)


def record(response: str = RESPONSE, reference: str | None = "14", **extra) -> dict:
    row = records.for_sample(records.new_problem(PROBLEM, source="test", reference_answer=reference), 0)
    return records.conform({**row, "response": response, **extra})


@pytest.fixture(scope="module")
def transform():
    return DlcotTransform(DlcotConfig())


def tiles(thought: str, segments) -> bool:
    """Whether ``segments`` cover ``thought`` exactly once, in order."""
    ends = [0] + [s.end for s in segments]
    return ends[-1] == len(thought) and all(s.start == end <= s.end for s, end in zip(segments, ends))


def segmented(policy: PolicyConfig | None = None) -> Segmentation:
    seg = cluster_approaches(segment_rules(THOUGHT, problem=PROBLEM, matcher=matcher()), threshold=0.5)
    policy = policy or PolicyConfig()
    return optimise_errors(simplify(seg, policy), policy)


# -- structure and the rules segmenter -------------------------------------------------------------------


def test_rules_segmenter_finds_the_macro_structure_in_order_and_tiles_the_thought():
    seg = segment_rules(THOUGHT, problem=PROBLEM, matcher=matcher())
    segments = seg.segments()
    assert tiles(THOUGHT, segments)
    kinds = [s.kind for s in segments]
    assert kinds[0] == "restatement" and kinds[-1] == "conclusion"
    order = ["restatement", "understanding", "exploration", "verification", "conclusion"]
    assert [k for k in order if k in kinds] == sorted(set(kinds), key=order.index)
    assert "understanding" in kinds
    assert THOUGHT[seg.conclusion.start : seg.conclusion.end].strip() == "I think that's the final answer."
    # one approach, ending at the first statement of 14, labelled from its own answer
    assert len(seg.approaches) == 1 and seg.approaches[0].label == "correct"
    # the wrong step and the sentence that flags it are the approach's error span
    (error,) = seg.approaches[0].errors
    assert THOUGHT[error.start : error.end].startswith("Let me compute 2 + 3 = 5")
    assert THOUGHT[error.start : error.end].rstrip().endswith("Wait, that's wrong.")
    # three verification units: two re-checks and one other method, all confirming 14
    assert [(u.label, u.alternative, u.correct) for u in seg.units] == [
        ("confirm", False, True), ("confirm", True, True), ("confirm", False, True)]


def test_intermediate_value_equal_to_the_reference_does_not_end_the_exploration():
    thought = ("\n\nSo I need the value of a + b where -1 < x < 5 is the solution set.\n\n"
               "Dividing by 2 gives -2 < x - 1 < 4.\n\nThen adding 1 gives -1 < x < 5, so a + b = 4.\n\n"
               "Wait, let me double-check: a = -1 and b = 5, so a + b = 4. Yes.\n\nSo the answer is 4.\n\n")
    seg = segment_rules(thought, problem="Solve -4 < 2(x - 1) < 8 for a + b.", matcher=matcher("4"))
    explored = thought[seg.approaches[0].start : seg.approaches[-1].end]
    assert "a + b = 4" in explored  # the work that reaches the answer stays in the exploration
    assert len(seg.units) == 1


def test_a_bare_result_that_a_check_follows_is_the_first_answer():
    # no "therefore": the answer is a display equation, and the next paragraph checks it (Sky-T1's habit)
    thought = ("\n\nSo I need to solve \\( \\frac{1}{2}(3x - 9) = x + 37 \\) for x.\n\n"
               "Multiplying both sides by 2 gives 3x - 9 = 2x + 74.\n\n"
               "Let me check that: 2 times 37 is 74, yes.\n\n"
               "Subtracting 2x and adding 9:\n\n\\[\nx = 83\n\\]\n\n"
               "Wait, that seems straightforward. But let me double-check my steps.\n\n"
               "Plugging in: 3(83) - 9 = 240 and 2(83) + 74 = 240, so both sides agree.\n\n"
               "Therefore, x = 83.\n\nSo the answer is 83.\n\n")
    seg = segment_rules(thought, problem="Solve \\(\\frac{1}{2}(3x - 9) = x + 37\\).", matcher=matcher("83"))
    explored = thought[seg.approaches[0].start : seg.approaches[-1].end]
    # a checked value that is not the reference ("2x + 74") ends nothing; the checked reference does
    assert "Let me check that" in explored and explored.rstrip().endswith("x = 83\n\\]")
    assert [a.label for a in seg.approaches] == ["correct"]
    assert thought[seg.units[0].start :].lstrip().startswith("Wait, that seems straightforward.")
    assert [(u.label, u.correct) for u in seg.units] == [("confirm", True)]


def test_result_values_read_what_a_paragraph_lands_on_without_a_concluding_word():
    assert result_values("\\[\nx = 83\n\\]") == ["83"]
    assert result_values("Let me calculate that: 6 times 7 is 42 inches.") == ["42"]
    assert result_values("So, there are 4 possible numbers that both could be thinking of.") == ["4"]
    assert result_values("Then, divide both sides by 3:") == []
    # the value stands mid-sentence, or is a residue
    assert result_values("So, Pam pays $10 more than Susan.") == ["10"]
    assert result_values("So, it would take 4 beakers to fill the tank.") == ["4"]
    assert result_values("Putting it together: \\(8^4 + 8^8 \\equiv 4 + 5 \\equiv 9 \\pmod{11}\\).") == ["9 \\pmod{11}"]


def test_reference_matcher_reads_intervals_residues_and_plain_units_without_math_verify():
    def refuse(pairs):
        raise AssertionError(f"sent to math-verify: {pairs}")

    assert ReferenceMatcher("(5,\\infty)", refuse).matches(["x > 5", "x \\geq 5", "5 < x"]) == [True, False, True]
    assert ReferenceMatcher("(-\\infty, 0]", refuse).matches(["y \\leq 0", "y < 0"]) == [True, False]
    assert ReferenceMatcher("(-\\infty, 2) \\cup (3, \\infty)", refuse).match("x > 3 \\text{ or } x < 2")
    assert ReferenceMatcher("(0, 36]", refuse).match("0 < x \\le 36")
    from longcot.dlcot.answers import _spellings

    assert _spellings("2 < x > 1") == {"2<x>1"}  # bounds in two directions: no interval
    nine = ReferenceMatcher("9", refuse)
    assert nine.matches(["9 \\pmod{11}", "9 \\mod 11", "2 \\pmod{9}"]) == [True, True, False]
    area = ReferenceMatcher("864 \\mbox{ inches}^2", refuse)
    assert area.matches(["864 in^2", "288 cm^3"]) == [True, False]
    assert ReferenceMatcher("2", refuse).matches(["2x", "2 dollars"]) == [False, True]  # x is no unit


def test_a_problem_expression_equal_to_the_answer_is_not_taken_for_the_answer():
    # simplifying sec x / sin x - sin x / cos x: the expression in the problem *is* cot x
    steps = read_steps("\n\nSo I need to simplify \\(\\frac{\\sec x}{\\sin x} - \\frac{\\sin x}{\\cos x}\\).\n\n"
                       "Therefore, it is \\(\\cot x\\).\n\n", matcher("\\cot x"),
                       problem="Simplify \\[\\frac{\\sec x}{\\sin x} - \\frac{\\sin x}{\\cos x}.\\]")
    assert [s.states_reference for s in steps] == [False, True]


def test_a_thought_with_too_few_paragraphs_cannot_be_segmented():
    with pytest.raises(SegmentationError, match="paragraph"):
        segment_rules("One paragraph only, answer 14.", problem=PROBLEM, matcher=matcher())


def test_segmentation_check_uses_the_released_thresholds():
    text = " ".join(f"word{i}" for i in range(200))
    assert check_segmentation(text, [text[:100], text[100:]]).passed
    assert not check_segmentation(text, [text[:40]]).passed  # most of the text lost
    shuffled = " ".join(reversed(text.split()))  # same words, other order: Jaccard passes it
    assert check_segmentation(text, [shuffled]).jaccard >= 0.95


# -- answers ---------------------------------------------------------------------------------------------


def test_stated_answers_reads_concluding_values_and_skips_prose_and_fragments():
    assert stated_answers("So, 6/3 + 5/3 + 3/3 = (6 + 5 + 3)/3 = 14/3.") == ["14/3"]
    assert stated_answers("Therefore, the polar coordinates are (3, π/2).") == ["(3, π/2)"]
    assert "17" in stated_answers("So, the value of \\( x \\) is indeed 17.")
    assert stated_answers("Therefore, the total surface area is 864 square inches.") == ["864"]
    assert stated_answers("Okay, that was straightforward.") == []
    assert stated_answers("Therefore, the double sum is:", None) == []
    assert stated_answers("\\[(p - 1) - (q - 1) = p - q\\]", "Therefore, the double sum is:") == ["p - q"]


def test_reference_matcher_settles_spellings_cheaply_and_sends_the_rest_to_math_verify():
    sent = []

    def spy(pairs):
        sent.extend(pairs)
        return check(pairs)

    m = ReferenceMatcher("\\frac{14}{3}", spy)
    assert m.matches(["14/3", "\\dfrac{14}{3}", "5/3", "2x", "x < 5"]) == [True, True, False, False, False]
    assert sent == []  # equal spellings, exact numbers, free variables and inequalities need no math-verify
    m = ReferenceMatcher("16 \\sqrt{3}", spy)
    assert m.matches(["\\sqrt{768}"]) == [True]  # a different spelling of the same value: math-verify decides
    assert sent == [("\\sqrt{768}", "16 \\sqrt{3}")]
    assert ReferenceMatcher("x=5", spy).match("5") and ReferenceMatcher("864 \\mbox{ inches}^2", spy).match("864")
    choice = ReferenceMatcher("\\text{(E)}", spy)  # a multiple-choice reference: the letter chosen counts
    assert choice.matches(["(E) Hyperbola", "a hyperbola", "(C)"]) == [True, False, False]
    assert len(sent) == 1


def test_reference_readable_tells_mathematics_from_garbage():
    for good in ("14", "\\frac{14}{3}", "(5,\\infty)", "\\left( 3, \\frac{\\pi}{2} \\right)", "\\text{Navin}", "(C)"):
        assert reference_readable(good), good
    for bad in ("\\frac{", "x^{2", "???"):
        assert not reference_readable(bad), bad


# -- clustering and the policies -------------------------------------------------------------------------


def test_rechecks_join_the_method_they_check_and_another_method_gets_its_own_cluster():
    seg = cluster_approaches(segment_rules(THOUGHT, problem=PROBLEM, matcher=matcher()), threshold=0.5)
    approach_cluster = seg.approaches[0].cluster
    assert [u.cluster == approach_cluster for u in seg.units] == [True, False, True]


def test_keep_first_correct_keeps_the_first_genuine_check_of_each_kind():
    """A re-check of the work that found the answer is what a check is: it is not redundant with that work.
    Only another check of the same kind is, and of those the one that calculates anew stays: the first
    re-check here only repeats the approach's "3 * 4 = 12 and 2 + 12 = 14", the third computes 12 + 2."""
    seg = segmented(PolicyConfig(max_verification_units=None))
    assert all(a.kept for a in seg.approaches)
    assert [u.kept for u in seg.units] == [False, True, True]
    assert seg.units[0].reason == "redundant: the same check as verification unit 3"
    capped = segmented(PolicyConfig())
    assert [u.kept for u in capped.units] == [False, False, True]
    assert "it solves another way; verification unit 3 re-checks" in capped.units[1].reason


def _members(*labels):
    """Approaches and units in a row, from (kind, label, cluster) triples; the text is a placeholder."""
    thought = "x" * (10 * len(labels) + 20)
    approaches, units, pos = [], [], 10
    for kind, label, cluster in labels:
        if kind == "a":
            approaches.append(Approach(len(approaches) + 1, pos, pos + 10, "1", label, cluster))
        else:
            units.append(VerificationUnit(len(units) + 1, pos, pos + 10, label, "1", label == "confirm", False, cluster))
        pos += 10
    return Segmentation(thought, Span(0, 10), None, tuple(approaches), tuple(units), Span(pos, len(thought)))


def test_keep_first_correct_keeps_distinct_failures_and_drops_later_duplicates_and_late_errors():
    seg = _members(("a", "incorrect", 1), ("a", "incorrect", 2), ("a", "incorrect", 1), ("a", "correct", 3),
                   ("a", "correct", 4), ("a", "incorrect", 5), ("a", "correct", 3), ("u", "confirm", 6),
                   ("u", "confirm", 7))
    out = simplify(seg, PolicyConfig(max_verification_units=None))
    assert [a.kept for a in out.approaches] == [True, True, False, True, True, False, False]
    assert out.approaches[2].reason == "redundant: same method as approach 1"
    assert out.approaches[5].reason == "incorrect after the first correct approach"
    assert [u.kept for u in out.units] == [True, True]
    capped = simplify(seg, PolicyConfig(max_verification_units=1))
    assert [u.kept for u in capped.units] == [True, False]
    assert "cap of 1" in capped.units[1].reason
    keeps_wrong = simplify(seg, PolicyConfig(drop_incorrect_after_correct=False, max_verification_units=None))
    assert keeps_wrong.approaches[5].kept


def test_the_cap_keeps_the_first_confirming_recheck_before_faults_and_other_methods():
    thought = "x" * 200
    units = (VerificationUnit(1, 20, 70, "confirm", "1", True, True, 2),  # first, but another method
             VerificationUnit(2, 70, 80, "fault", "1", True, False, 3),  # finds a fault
             VerificationUnit(3, 80, 110, "confirm", "1", True, False, 4),  # the first confirming re-check
             VerificationUnit(4, 110, 120, "confirm", "1", True, False, 5))  # shorter, later
    seg = Segmentation(thought, Span(0, 10), None, (Approach(1, 10, 20, "1", "correct", 1),), units, Span(120, 200))
    assert [u.kept for u in simplify(seg, PolicyConfig(max_verification_units=1)).units] == [False, False, True, False]
    two = simplify(seg, PolicyConfig(max_verification_units=2)).units
    assert [u.kept for u in two] == [False, False, True, True]
    assert all("cap of 2" in u.reason for u in two[:2])
    assert all(u.kept for u in simplify(seg, PolicyConfig(max_verification_units=None)).units)


def test_a_trace_without_a_correct_approach_is_unsolvable():
    with pytest.raises(Unsolvable):
        simplify(_members(("a", "incorrect", 1), ("a", "incomplete", 2)), PolicyConfig())


def test_a_unit_that_checks_is_kept_before_one_that_only_muses_about_another_way():
    thought = ("\n\nSo I need 2 + 3 * 4.\n\n3 * 4 = 12 and 2 + 12 = 14.\n\n"
               "Wait, let me double-check: 12 + 2 = 14. Yes.\n\n"
               "Alternatively, I could think about it another way, but this one is fine.\n\nSo it is 14.\n\n")
    a, b, c = thought.index("Wait"), thought.index("Alternatively"), thought.index("So it is")
    units = (VerificationUnit(1, a, b, "confirm", "14", True, False, 2),  # checks, longer
             VerificationUnit(2, b, c, "confirm", "14", True, True, 3))  # shorter, does no checking
    seg = Segmentation(thought, Span(0, 22), None, (Approach(1, 22, a, "14", "correct", 1),), units,
                       Span(c, len(thought)))
    out = simplify(seg, PolicyConfig(max_verification_units=1)).units
    assert [u.kept for u in out] == [True, False] and "it solves another way" in out[1].reason
    # re-checking approach 1 (its cluster) does not make the check redundant
    recheck = seg.with_members([seg.approaches[0], replace(units[0], cluster=1), units[1]])
    assert [u.kept for u in simplify(recheck, PolicyConfig(max_verification_units=1)).units] == [True, False]
    assert [u.kept for u in simplify(recheck, PolicyConfig(max_verification_units=None)).units] == [True, True]


def test_a_check_that_only_restates_earlier_work_gives_way_to_one_that_calculates():
    from longcot.dlcot.simplify import genuine

    thought = ("\n\nSo I need 2 + 3 * 4.\n\n3 * 4 = 12 and 2 + 12 = 14.\n\n"
               "Wait, is that right? As computed, 3 * 4 = 12 and 2 + 12 = 14. That matches.\n\n"
               "Let me double-check another way: 4 + 4 + 4 = 12, and 12 + 2 = 14. Yes.\n\nSo it is 14.\n\n")
    a, b, c = thought.index("Wait"), thought.index("Let me"), thought.index("So it is")
    units = (VerificationUnit(1, a, b, "confirm", "14", True, False, 2),  # restates the calculation verbatim
             VerificationUnit(2, b, c, "confirm", "14", True, False, 3))  # calculates anew
    assert not genuine(thought, units[0]) and genuine(thought, units[1])
    seg = Segmentation(thought, Span(0, 22), None, (Approach(1, 22, a, "14", "correct", 1),), units,
                       Span(c, len(thought)))
    out = simplify(seg, PolicyConfig(max_verification_units=1)).units
    assert [u.kept for u in out] == [False, True] and "only restates earlier work" in out[0].reason


def test_checks_are_recognised_where_they_open_a_clause_late_or_as_a_doubt():
    from longcot.dlcot.rules import Step, starts_unit

    def opens(text):
        return starts_unit(Step(0, len(text), 0, text, [], []))

    assert opens("Wait a minute, let me double-check that.")
    assert opens("Wait, is that it? It seems almost too straightforward. Let me double-check.")
    assert opens("Wait, that seems too straightforward. Did I miss something?")
    assert opens("Alternatively, I could count it as repeated addition.")
    assert not opens("Hmm, that looks a bit messy. Maybe I can find a common denominator.")
    assert not opens("So, there are 60 different ways to assign the offices.")  # a count, not another method
    assert not opens("But the problem asks for the answer as a fraction, so 15.975 = 639/40.")  # the work goes on


def test_a_paragraph_that_only_announces_a_check_belongs_to_the_check():
    thought = ("\n\nSo I need to find 2 + 3 * 4.\n\nFirst, multiplication: 3 * 4 = 12.\n\n"
               "So 2 + 12 = 14, and the answer is 14.\n\n"
               "Wait a minute, is there another way to confirm this?\n\n"
               "Alternatively, 2 + 4 + 4 + 4 = 14, which agrees.\n\n"
               "Let me double-check the product: 3 * 4 = 12. Yes.\n\nI think that's the final answer.\n\n")
    seg = segment_rules(thought, problem=PROBLEM, matcher=matcher())
    texts = [thought[u.start : u.end].strip() for u in seg.units]
    assert len(texts) == 2 and texts[0].startswith("Wait a minute") and texts[0].endswith("which agrees.")
    assert seg.units[0].alternative and texts[1].startswith("Let me double-check")  # another way, announced


def test_one_verification_unit_is_kept_even_when_all_are_one_cluster_the_genuine_recheck():
    seg = segmented(PolicyConfig(max_verification_units=None))
    redundant = seg.with_members([*seg.approaches, *(replace(u, cluster=1) for u in seg.units)])
    out = simplify(redundant, PolicyConfig())
    kept = [u for u in out.units if u.kept]
    assert len(kept) == 1 and kept[0].index == 3
    assert all(u.reason == "redundant: the same check as verification unit 3" for u in out.units[:2])


@pytest.mark.parametrize("errors", ["keep", "remove_span", "remove_approach"])
def test_error_policies(errors):
    seg = segmented(PolicyConfig(errors=errors))
    error_segments = [s for s in seg.segments() if s.label == "error"]
    assert len(error_segments) == 1
    # the only approach is the first correct one: remove_approach falls back to removing the span
    assert error_segments[0].kept is (errors == "keep")
    text = reassemble(THOUGHT, seg.segments())
    assert ("2 + 3 = 5" in text) is (errors == "keep")
    assert "Multiplication comes first" in text  # the correction stays, and reads on


# -- the transform: reassembly, fields, skips ------------------------------------------------------------


def test_transform_keeps_markers_and_solution_and_every_kept_character_verbatim(transform):
    (out,) = transform([record()])
    assert out["dlcot_skip_reason"] is None
    new, old = out["dlcot_response"], out["original_response"]
    assert old == RESPONSE and out["response"] == new  # replace_response (the default) swaps them
    parsed, new_parsed = parse_trace(old), parse_trace(new)
    assert new_parsed.markers == "sky" and new_parsed.solution == parsed.solution
    assert new.startswith(B_T) and new.endswith(E_S)
    segments = out["segments"]
    assert new_parsed.thought == "".join(THOUGHT[s["start"] : s["end"]] for s in segments if s["kept"])
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    assert out["tokens_after"] < out["tokens_before"]
    detail = records.lineage_detail(out, DlcotLineage)
    assert detail.segmenter == "rules" and detail.units_kept >= 1
    assert sum(detail.kind_tokens_before[k] for k in ("restatement", "understanding", "exploration",
                                                         "verification", "conclusion")) == out["tokens_before"]


def test_replace_response_off_leaves_the_response_alone():
    (out,) = DlcotTransform(DlcotConfig(replace_response=False))([record()])
    assert out["response"] == RESPONSE and out["original_response"] is None
    assert out["dlcot_response"] != RESPONSE


def _skip(transform, row) -> str:
    (out,) = transform([row])
    assert out["dlcot_response"] is None and out["segments"] is None
    assert records.lineage_detail(out, DlcotLineage).skipped == out["dlcot_skip_reason"].split(":")[0]
    return out["dlcot_skip_reason"].split(":")[0]


def test_bad_input_gets_a_skip_reason_never_an_exception(transform):
    cut = RESPONSE[: RESPONSE.index(E_T)]
    big = f"{B_T}\n\n" + ("So 3 * 4 = 12, and 2 + 12 = 14.\n\n" * 33_000) + f"{E_T}{B_S}{SOLUTION}{E_S}"
    assert len(big) > 1_000_000
    cases = {
        "no_markers": record(THOUGHT + SOLUTION),
        "truncated": record(cut),
        "empty_thought": record(f"{B_T}\n\n{E_T}{B_S}{SOLUTION}{E_S}"),
        "too_long": record(big),
        "reference_unparseable": record(reference="\\frac{"),
        "no_reference": record(reference=None),
        "no_response": record(response=None),
        "not_correct": record(reference="15"),
        "segmentation_failed": record(f"{B_T}\n\nSo the answer is 14.\n\n{E_T}{B_S}{SOLUTION}{E_S}"),
    }
    got = {name: _skip(transform, row) for name, row in cases.items()}
    assert got == {name: name for name in cases}


def test_a_verdict_from_the_verify_stage_is_trusted(transform):
    assert _skip(transform, record(verdict="incorrect", correct=False)) == "not_correct"


def test_on_skip_reject_sends_skipped_records_to_the_rejected_file():
    (out,) = DlcotTransform(DlcotConfig(on_skip="reject"))([record(THOUGHT + SOLUTION)])
    assert out["reject_reason"].startswith("dlcot: no_markers")


# -- the llm segmenter: parsing, re-anchoring, fallback ----------------------------------------------------

REPLY = """Here are the labels:
1-1 restatement
2-2 understanding
3-6 exploration approach=1 cluster=1 error=3
7-7 verification cluster=1 confirm
8-8 verification cluster=2 confirm
9-9 verification cluster=1 confirm
10-10 conclusion"""


def test_judge_labels_are_parsed_and_re_anchored_on_the_original_text():
    steps = read_steps(THOUGHT, matcher(), PROBLEM)
    labels = anchor_labels(parse_labels(REPLY, steps), steps)
    assert [(l.first, l.last, l.kind) for l in labels][:3] == [(1, 1, "restatement"), (2, 2, "understanding"),
                                                               (3, 6, "exploration")]
    seg = segment_llm(THOUGHT, problem=PROBLEM, matcher=matcher(), reply=REPLY)
    assert seg.segmenter == "llm" and tiles(THOUGHT, seg.segments())
    assert [a.label for a in seg.approaches] == ["correct"]  # outcome still checked against the reference
    assert [u.cluster for u in seg.units] == [1, 2, 1]  # clusters from the judge
    assert len(seg.approaches[0].errors) == 1


def test_judge_quoting_text_instead_of_numbers_is_anchored_by_the_quote():
    reply = ('restatement: "So I have this problem"\nexploration: "First, I need to remember"\n'
             'verification: "Wait a minute, let me double-check"\nconclusion: "I think that\'s the final answer"')
    seg = segment_llm(THOUGHT, problem=PROBLEM, matcher=matcher(), reply=reply)
    assert THOUGHT[seg.units[0].start :].lstrip().startswith("Wait a minute")


class _Judge:
    """A judge model that answers with fixed text (the rules fallback is what is under test)."""

    def __init__(self, text: str):
        self.text = text

    def render(self, messages):
        return json.dumps(messages)

    def generate(self, prompts, **kwargs):
        return [Completion(self.text, 10, 5, "stop") for _ in prompts]


@pytest.mark.parametrize("reply, reason", [
    ("I cannot help with that.", "no segment labels"),
    ("1-1 restatement\n2-2 exploration", "segmentation check failed"),
    ("9-10 conclusion\n1-8 exploration", "out of order"),
])
def test_unusable_judge_replies_fall_back_to_rules_and_say_why(reply, reason):
    segmenter = LLMSegmenter(DlcotConfig().judge, engine=_Judge(reply))
    (seg,) = segmenter.segment([Thought(THOUGHT, PROBLEM, matcher())])
    assert seg.segmenter == "rules" and reason in seg.fallback


def test_llm_fallback_is_recorded_in_the_lineage():
    transform = DlcotTransform(DlcotConfig(segmenter="llm"), segmenter=LLMSegmenter(DlcotConfig().judge,
                                                                                     engine=_Judge("no idea")))
    (out,) = transform([record()])
    detail = records.lineage_detail(out, DlcotLineage)
    assert detail.segmenter == "llm" and detail.segmented_by == "rules" and detail.fallback


# -- config, input files, report -------------------------------------------------------------------------


def test_a_bad_setting_names_the_field():
    from longcot.config import parse_job

    with pytest.raises(ConfigError, match=r"dlcot\.policy\.errors"):
        parse_job({"dlcot": {"policy": {"errors": "drop"}}})
    with pytest.raises(ConfigError, match=r"dlcot\.policy\.max_verification_units"):
        parse_job({"dlcot": {"policy": {"max_verification_units": 0}}})


def test_raw_trace_files_become_records_and_bad_lines_are_kept(tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps({"idx": 7, "problem": PROBLEM, "reference_answer": "14", "response": RESPONSE})
                    + "\n{not json\n" + json.dumps({"idx": 8, "problem": PROBLEM, "reference_answer": "14",
                                                    "response": RESPONSE}) + "\n")
    items = list(read_traces(path, DlcotConfig().fields))
    assert isinstance(items[1], BadLine) and items[1].line == 2
    a, b = items[0], items[2]
    assert a["response"] == RESPONSE and a["reference_answer"] == "14"
    assert json.loads(a["metadata"])["source_id"] == 7 and a["id"] != b["id"]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"problem": PROBLEM, "text": RESPONSE}) + "\n")
    with pytest.raises(InputError, match="response"):
        list(read_traces(other, DlcotConfig().fields))


def test_report_counts_skips_and_token_shares_and_draws_the_histogram(transform, tmp_path):
    rows = transform([record(), record(THOUGHT + SOLUTION), record(reference="15")])
    report = build_report(rows)
    assert report["transformed"] == 1 and report["skip_reasons"] == {"no_markers": 1, "not_correct": 1}
    assert report["tokens"]["share_before"]["verification"] > report["tokens"]["share_after"]["verification"]
    assert report["thought_token_ratio"]["count"] == 1
    paths = write_report(report, tmp_path)
    assert json.loads((tmp_path / "token_ratio.json").read_text())["ratios"] == report["ratios"]
    assert (tmp_path / "token_ratio.png").read_bytes()[:4] == b"\x89PNG"
    assert set(paths) == {"report", "token_ratio", "histogram"}
