"""One prompt for a student: the text it trains on, is evaluated with and is served with is the same text.

A prompt that differs between training and evaluation or serving silently voids distillation (the student
is asked something it never saw), so the three real code paths render one held-out problem here and must
agree to the character, with the default prompt and with a custom system turn and instruction.
"""

from __future__ import annotations

import json

import pytest

from longcot import records
from longcot.eval.config import EvalConfig, ModelEntry
from longcot.eval.stage import generate_config_for, heldout_problems
from longcot.generate.backends import make_backend
from longcot.generate.prompting import StudentPrompt
from longcot.generate.samples import messages_for
from longcot.models import DEFAULT_MODEL, load_tokenizer
from longcot.problems import benchmarks
from longcot.serve.config import ServeConfig
from longcot.serve.endpoint import render_chat
from longcot.serve.stage import smoke_messages
from longcot.train.card import StudentCard
from longcot.train.config import DataSettings
from longcot.train.examples import chat_messages, encode


def _heldout_record() -> dict:
    problem = next(benchmarks.iter_problems(benchmarks.load_registry()["math500"], 1))
    row = records.for_sample(problem, 0)
    return {**row, "response": "<|begin_of_thought|>\n\nThink.\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n"
            "\\boxed{1}\n\n<|end_of_solution|>", "verdict": "correct", "correct": True}


@pytest.mark.parametrize("prompt", [StudentPrompt(), StudentPrompt(system_prompt="Think step by step.",
                                                                   instruction="Answer in \\boxed{}.")])
def test_train_eval_and_serve_render_the_same_prompt(prompt, tmp_path):
    tokenizer = load_tokenizer(DEFAULT_MODEL, padding_side="right")
    row = _heldout_record()
    data = DataSettings(system_prompt=prompt.system_prompt, instruction=prompt.instruction, cutoff_len=2048)

    # train: the prompt part of the encoded example (everything the loss mask hides)
    example = encode(chat_messages(row, data), tokenizer, data.cutoff_len)
    n_prompt = example.labels.index(next(x for x in example.labels if x != -100))
    trained = tokenizer.decode(example.input_ids[:n_prompt])

    # eval: the student's card sets the prompt of every variant; the hf backend renders the held-out problem
    card = StudentCard(base_model=DEFAULT_MODEL, mode="lora", prompt=data.prompt(), cutoff_len=2048)
    problem = heldout_problems([row], None)[0]
    for entry in (ModelEntry(name="student", model=DEFAULT_MODEL), ModelEntry(name="base", model=DEFAULT_MODEL)):
        gen = generate_config_for(entry, EvalConfig(), 0, card.prompt)
        evaluated = make_backend(gen).render(messages_for(problem, gen))
        assert evaluated == trained, entry.name

    # serve: the smoke test's messages (from the card beside the adapter) through the endpoint's renderer
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    card.save(adapter)
    config = ServeConfig(model=DEFAULT_MODEL, adapter=str(adapter))
    served = render_chat(tokenizer, smoke_messages(config, row), default_system=card.prompt.system_prompt)
    assert served == trained
    # a client that sends only the user turn gets the student's system turn too
    user_only = [m for m in smoke_messages(config, row) if m["role"] == "user"]
    assert render_chat(tokenizer, user_only, default_system=card.prompt.system_prompt) == trained


def test_the_teacher_prompt_is_not_the_students():
    """The reasoning system prompt that asks a teacher for markers never reaches the student: training and a
    student's evaluation leave it out, so a student that writes markers learned them."""
    row = _heldout_record()
    teacher = make_backend(EvalConfig().generate).render(messages_for(row, EvalConfig().generate))
    student = generate_config_for(ModelEntry(name="s"), EvalConfig(), 0, StudentPrompt())
    rendered = make_backend(student).render(messages_for(row, student))
    assert "<think>" in teacher and "<think>" not in rendered and "begin_of_thought" not in rendered
    assert student.system_prompt == ""


def test_heldout_problems_keep_the_first_of_each_and_read_no_row_past_the_limit():
    rows = [{"problem": "What is 1 + 1?", "problem_id": "p1"}, {"problem": "What is 1 + 1?", "problem_id": "p1"},
            {"problem": "What is 2 + 2?", "problem_id": "p2"}, {"problem": None, "problem_id": "p3"}]
    assert [p["problem_id"] for p in heldout_problems(rows, 2)] == ["p1", "p2"]  # the row without text is past it
    assert all(json.loads(p["metadata"])["eval_set"] == "heldout" for p in heldout_problems(rows[:3], None))
