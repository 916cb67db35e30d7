"""Export kept traces as training files in the formats the common SFT trainers read.

- ``messages``: JSON Lines, one ``{"messages": [{"role", "content"}, ...], "id", "source", "domain"}`` per
  trace: TRL's conversational format, axolotl's ``chat_template`` type (``field_messages: messages``),
  LLaMA-Factory's sharegpt formatting with OpenAI tags (described in the ``dataset_info.json`` written
  next to the files).
- ``sharegpt``: one JSON array of ``{"conversations": [{"from": "human"|"gpt", "value"}], "system"?}``:
  LLaMA-Factory's default sharegpt layout, axolotl's sharegpt conversations.
- ``parquet``: the ``messages`` layout as a Parquet file (``list<struct<role, content>>``).

The user turn is the one the train stage builds (``generate.prompting.StudentPrompt``: the problem, then the
row's or the configured instruction), so a model trained elsewhere on the export sees longcot's own prompt.
The assistant turn is the response (or ``dlcot_response``), as generated (``raw``), rewritten as
``<think>thought</think>`` then the solution (``think``), or split into ``reasoning_content`` and ``content``
(``reasoning_content``, as DeepSeek's API and R1-style chat templates carry the thought). Only traces whose
verdict is known and not correct are left out, unless ``include_incorrect``; ``selected`` says how many.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from longcot.verify.config import ExportConfig
from longcot.traces import parse_trace

FILES = {"messages": "train.messages.jsonl", "sharegpt": "train.sharegpt.json", "parquet": "train.parquet"}


def assistant_message(row: dict, config: ExportConfig) -> dict[str, str]:
    """The assistant turn of a trace in the configured ``style``."""
    text = row.get(config.field) or row.get("response") or ""
    if config.style == "raw":
        return {"role": "assistant", "content": text}
    parsed = parse_trace(text)
    if config.style == "reasoning_content":
        if parsed.markers == "none":
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": parsed.solution.strip(), "reasoning_content": parsed.thought.strip()}
    if parsed.markers == "none" and not parsed.solution:
        return {"role": "assistant", "content": f"<think>\n{parsed.thought.strip()}\n</think>"}
    return {"role": "assistant", "content": f"<think>\n{parsed.thought.strip()}\n</think>\n\n{parsed.solution.strip()}"}


def conversation(row: dict, config: ExportConfig) -> list[dict[str, str]]:
    """The chat of one trace: the student's prompt as the train stage builds it, then the trace."""
    from longcot.generate.imports import metadata_system
    from longcot.generate.prompting import StudentPrompt

    system = config.system if config.system is not None else metadata_system(row)
    prompt = StudentPrompt(system_prompt=system, instruction=config.instruction)
    return prompt.messages(row) + [assistant_message(row, config)]


def selected(rows: list[dict], config: ExportConfig) -> tuple[list[dict], dict[str, int]]:
    """The rows an export writes (not known-incorrect ones, unless asked), and the counts of what was kept."""
    verdicts = Counter(r.get("correct") for r in rows)  # True, False, or None: unverified
    keep = rows if config.include_incorrect else [r for r in rows if r.get("correct") is not False]
    wrong_kept = verdicts[False] if config.include_incorrect else 0
    return keep, {"exported": len(keep), "correct": verdicts[True], "unverified": verdicts[None],
                  "incorrect_exported": wrong_kept, "incorrect_left_out": verdicts[False] - wrong_kept}


def _with_metadata(item: dict, row: dict) -> dict:
    metadata = row.get("metadata")
    if metadata:  # the input's own columns come back out
        item["metadata"] = json.loads(metadata) if isinstance(metadata, str) else metadata
    return item


def _messages_row(row: dict, config: ExportConfig) -> dict:
    return _with_metadata({"messages": conversation(row, config), "id": row.get("id"), "source": row.get("source"),
                           "domain": row.get("domain")}, row)


def _sharegpt_row(row: dict, config: ExportConfig) -> dict:
    turns = {"user": "human", "assistant": "gpt"}
    messages = conversation(row, config)
    item = {"conversations": [{"from": turns[m["role"]], "value": m["content"]} for m in messages if m["role"] != "system"],
            "id": row.get("id")}
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    if system:
        item["system"] = system
    return _with_metadata(item, row)


def export_records(rows: list[dict], config: ExportConfig, out_dir: str | Path) -> dict[str, str]:
    """Write ``rows`` (the ``selected`` ones) in each of ``config.formats`` under ``out_dir``, plus a
    LLaMA-Factory ``dataset_info.json``. Returns ``{format: path}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from longcot.errors import ConfigError

    if config.style == "reasoning_content" and "sharegpt" in config.formats:
        raise ConfigError("export style reasoning_content: ShareGPT conversations have no field for it; export "
                          "messages or parquet, or use style think")
    rows, _ = selected(rows, config)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    sharegpt: list[dict] = []
    for fmt in config.formats:
        path = target / FILES[fmt]
        tmp = path.with_name(f".tmp-{path.name}")
        if fmt == "messages":
            with tmp.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(_messages_row(row, config), ensure_ascii=False) + "\n")
        elif fmt == "sharegpt":
            sharegpt = [_sharegpt_row(r, config) for r in rows]
            tmp.write_text(json.dumps(sharegpt, ensure_ascii=False, indent=1), encoding="utf-8")
        else:
            # every message has the reasoning_content column: pyarrow fills null where it carries no thought
            message = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string())])
            schema = pa.schema([("messages", pa.list_(message)), ("id", pa.string()), ("source", pa.string()),
                                ("domain", pa.string()), ("metadata", pa.string())])
            items = [_messages_row(r, config) for r in rows]
            for item in items:
                if "metadata" in item:
                    item["metadata"] = json.dumps(item["metadata"], ensure_ascii=False, default=str)
            pq.write_table(pa.Table.from_pylist(items, schema=schema), tmp)
        tmp.replace(path)
        written[fmt] = str(path)
    if written:
        info = dataset_info(written, has_system=any("system" in item for item in sharegpt))
        (target / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return written


def dataset_info(written: dict[str, str], has_system: bool = False) -> dict:
    """LLaMA-Factory's ``dataset_info.json`` entries for the exported files."""
    openai_tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                   "assistant_tag": "assistant", "system_tag": "system"}
    info = {}
    for fmt in ("messages", "parquet"):  # the same messages layout, as JSON Lines or Parquet
        if fmt in written:
            info[f"longcot_{fmt}"] = {"file_name": Path(written[fmt]).name, "formatting": "sharegpt",
                                      "columns": {"messages": "messages"}, "tags": openai_tags}
    if "sharegpt" in written:
        columns = {"messages": "conversations", **({"system": "system"} if has_system else {})}
        info["longcot_sharegpt"] = {"file_name": Path(written["sharegpt"]).name, "formatting": "sharegpt",
                                    "columns": columns}
    return info
