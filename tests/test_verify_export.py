"""Exports load with `datasets` in the layouts TRL, axolotl and LLaMA-Factory read, and render through a
chat template (the embedded model's tokenizer)."""

from __future__ import annotations

import json

import pytest

from longcot.records import for_sample, new_problem
from longcot.verify.config import ExportConfig
from longcot.verify.export import export_records

RESPONSE = ("<|begin_of_thought|>\n\nAdd 2 and 2.\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n"
            "The sum is \\boxed{4}.\n\n<|end_of_solution|>")


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model)


def _rows():
    rows = []
    for i, (problem, response) in enumerate([("What is 2 + 2?", RESPONSE), ("Name a prime.", "<think>\n2 is prime\n</think>\n\n2")]):
        row = for_sample(new_problem(problem, source="file:x.jsonl"), 0)
        rows.append({**row, "response": response, "dlcot_response": None if i else RESPONSE.replace("Add", "Sum")})
    return rows


def test_messages_sharegpt_and_parquet_load_and_render(tmp_path, tokenizer):
    import datasets

    config = ExportConfig(formats=["messages", "sharegpt", "parquet"], system="You are careful.")
    written = export_records(_rows(), config, tmp_path)
    assert set(written) == {"messages", "sharegpt", "parquet"}

    messages = datasets.load_dataset("json", data_files=written["messages"], split="train")
    parquet = datasets.load_dataset("parquet", data_files=written["parquet"], split="train")
    sharegpt = datasets.load_dataset("json", data_files=written["sharegpt"], split="train")
    assert len(messages) == len(parquet) == len(sharegpt) == 2

    for table in (messages, parquet):  # TRL / axolotl chat_template: a `messages` column of role/content
        chat = table[0]["messages"]
        assert [m["role"] for m in chat] == ["system", "user", "assistant"]
        rendered = tokenizer.apply_chat_template(chat, tokenize=False)
        assert "What is 2 + 2?" in rendered and "\\boxed{4}" in rendered and "You are careful." in rendered
        tokens = tokenizer.apply_chat_template(chat, tokenize=True)
        assert len(tokens["input_ids"] if hasattr(tokens, "keys") else tokens) > 20

    roles = {"human": "user", "gpt": "assistant"}  # LLaMA-Factory's sharegpt tags
    item = sharegpt[1]
    chat = [{"role": "system", "content": item["system"]}] + [
        {"role": roles[turn["from"]], "content": turn["value"]} for turn in item["conversations"]
    ]
    assert "2 is prime" in tokenizer.apply_chat_template(chat, tokenize=False)

    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["longcot_sharegpt"]["columns"] == {"messages": "conversations", "system": "system"}
    assert info["longcot_messages"]["tags"]["assistant_tag"] == "assistant"


def test_think_style_and_dlcot_field(tmp_path):
    config = ExportConfig(formats=["messages"], field="dlcot_response", style="think")
    path = export_records(_rows(), config, tmp_path)["messages"]
    first, second = [json.loads(line) for line in open(path)]
    assistant = first["messages"][-1]["content"]
    assert assistant == "<think>\nSum 2 and 2.\n</think>\n\nThe sum is \\boxed{4}."
    assert second["messages"][-1]["content"] == "<think>\n2 is prime\n</think>\n\n2"  # no dlcot_response: response
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
