"""Trace parsing: every marker convention, truncation, and all 530 shared real traces."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import AIME_TRACES, MATH_TRACES
from longcot.traces import looks_finished, parse_trace, replace_thought, split_steps


def _traces(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sky_markers_split_thought_and_solution():
    text = "<|begin_of_thought|>\n\nthink a\n\nthink b\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\nx = \\boxed{2}\n\n<|end_of_solution|>"
    parsed = parse_trace(text)
    assert (parsed.markers, parsed.truncated, parsed.thought_closed) == ("sky", False, True)
    assert parsed.step_texts() == ["think a", "think b"]
    assert parsed.solution.strip() == "x = \\boxed{2}"


def test_sky_stopped_inside_the_thought_is_truncated_and_unclosed():
    parsed = parse_trace("<|begin_of_thought|>\n\nso far so good\n\nand then")
    assert (parsed.markers, parsed.truncated, parsed.thought_closed, parsed.solution) == ("sky", True, False, "")


def test_sky_solution_never_closed_is_truncated_but_thought_closed():
    parsed = parse_trace("<|begin_of_thought|>a<|end_of_thought|><|begin_of_solution|>partial")
    assert (parsed.truncated, parsed.thought_closed, parsed.solution) == (True, True, "partial")


def test_chat_header_instead_of_begin_of_solution_is_not_part_of_the_solution():
    parsed = parse_trace("thinking\n\n<|end_of_thought|>\n\n<|im_start|>solution\nThe answer is 5.")
    assert parsed.thought.strip() == "thinking"
    assert parsed.solution == "The answer is 5."


def test_think_tags_with_and_without_the_opening_tag():
    full = parse_trace("<think>\nreason\n</think>\n\nAnswer: 3")
    bare = parse_trace("reason\n</think>\n\nAnswer: 3")  # chat templates put <think> in the prompt
    for parsed in (full, bare):
        assert (parsed.markers, parsed.truncated) == ("think", False)
        assert parsed.thought.strip() == "reason" and parsed.solution.strip() == "Answer: 3"
    cut = parse_trace("<think>\nreason and reason")
    assert (cut.truncated, cut.thought_closed) == (True, False)


def test_no_markers_cut_off_mid_sentence_counts_as_truncated():
    assert not parse_trace("So the answer is 9.").truncated
    assert parse_trace("So, the next step is to compute \\( (1.036)^3 - 3.31(1.").truncated
    assert parse_trace("Alternatively, I can think").truncated
    assert parse_trace("anything at all.", finish_reason="length").truncated
    assert looks_finished("**Final Answer**\n\n\\[ \\boxed{27} \\]")
    assert looks_finished("Here it is:\n\n```python\ndef add(x, y):\n    return x + y\n```")


def test_replace_thought_keeps_every_other_byte():
    text = "<|begin_of_thought|>\n\nold thought\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n\\boxed{1}\n\n<|end_of_solution|>"
    parsed = parse_trace(text)
    new = replace_thought(text, parsed, "\n\nnew\n\n")
    assert new == text.replace("old thought", "new")
    assert split_steps("a\n\n \n\nb\n") == [(0, 1), (6, 7)]


def test_all_530_shared_traces_parse_into_a_defined_state():
    rows = _traces(MATH_TRACES) + _traces(AIME_TRACES)
    assert len(rows) == 530
    states = Counter()
    for row in rows:
        text = row["response"]
        parsed = parse_trace(text)
        assert parsed.markers in ("sky", "think", "none")
        assert 0 <= parsed.thought_start <= parsed.thought_end <= len(text)
        assert parsed.thought_end <= parsed.solution_start <= parsed.solution_end <= len(text)
        assert parsed.thought == text[parsed.thought_start : parsed.thought_end]
        assert replace_thought(text, parsed, parsed.thought) == text
        for marker in ("<|begin_of_thought|>", "<|end_of_thought|>", "<|end_of_solution|>"):
            assert marker not in parsed.thought and marker not in parsed.solution
        if not parsed.thought_closed:
            assert parsed.truncated
        states[(parsed.markers, parsed.thought_closed, parsed.truncated)] += 1
    math_rows = _traces(MATH_TRACES)
    # the data's own census (README): 94 stop inside the thought, 16 close the thought but not the solution
    inside = sum(1 for r in math_rows if "<|begin_of_thought|>" in r["response"] and "<|end_of_thought|>" not in r["response"])
    assert inside == 94
    assert states[("sky", False, True)] == 94 + 22  # math500 + aime24
    assert sum(v for (markers, _, _), v in states.items() if markers == "none") == 210


@pytest.mark.parametrize("response", [None, "", "<|begin_of_thought|>", "</think>", "<|end_of_solution|>"])
def test_degenerate_responses_still_parse(response):
    parsed = parse_trace(response)
    assert parsed.markers in ("sky", "think", "none")
    assert parsed.truncated in (True, False)
