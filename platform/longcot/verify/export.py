"""Export kept traces as training files in the formats the common SFT trainers read.

- ``messages``: JSON Lines, one ``{"messages": [{"role", "content"}, ...], "id", "source", "domain"}`` per
  trace: TRL's conversational format, axolotl's ``chat_template`` type (``field_messages: messages``),
  LLaMA-Factory's sharegpt formatting with OpenAI tags (described in the ``dataset_info.json`` written
  next to the files).
- ``sharegpt``: one JSON array of ``{"conversations": [{"from": "human"|"gpt", "value"}], "system"?}``:
  LLaMA-Factory's default sharegpt layout, axolotl's sharegpt conversations.
- ``parquet``: the ``messages`` layout as a Parquet file (``list<struct<role, content>>``).

The user turn is the problem; the assistant turn the response (or ``dlcot_response``), as generated
(``raw``) or rewritten as ``<think>thought</think>`` then the solution (``think``).
"""

from __future__ import annotations

import json
from pathlib import Path

from longcot.verify.config import ExportConfig
from longcot.verify.parse import parse_trace

FILES = {"messages": "train.messages.jsonl", "sharegpt": "train.sharegpt.json", "parquet": "train.parquet"}


def assistant_text(row: dict, config: ExportConfig) -> str:
    text = row.get(config.field) or row.get("response") or ""
    if config.style == "raw":
        return text
    parsed = parse_trace(text)
    if parsed.markers == "none" and not parsed.solution:
        return f"<think>\n{parsed.thought.strip()}\n</think>"
    return f"<think>\n{parsed.thought.strip()}\n</think>\n\n{parsed.solution.strip()}"


def conversation(row: dict, config: ExportConfig) -> list[dict[str, str]]:
    """The chat of one trace: optional system, the problem as user, the trace as assistant."""
    messages = [{"role": "system", "content": config.system}] if config.system else []
    messages.append({"role": "user", "content": row.get("problem") or ""})
    messages.append({"role": "assistant", "content": assistant_text(row, config)})
    return messages


def _messages_row(row: dict, config: ExportConfig) -> dict:
    return {"messages": conversation(row, config), "id": row.get("id"), "source": row.get("source"),
            "domain": row.get("domain")}


def _sharegpt_row(row: dict, config: ExportConfig) -> dict:
    turns = {"user": "human", "assistant": "gpt"}
    item = {"conversations": [{"from": turns[m["role"]], "value": m["content"]}
                              for m in conversation(row, config) if m["role"] != "system"],
            "id": row.get("id")}
    if config.system:
        item["system"] = config.system
    return item


def export_records(rows: list[dict], config: ExportConfig, out_dir: str | Path,
                   formats: list[str] | None = None) -> dict[str, str]:
    """Write ``rows`` in each of ``formats`` (default ``config.formats``) under ``out_dir``, plus a
    LLaMA-Factory ``dataset_info.json``. Returns ``{format: path}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for fmt in formats if formats is not None else config.formats:
        path = target / FILES[fmt]
        tmp = path.with_name(f".tmp-{path.name}")
        if fmt == "messages":
            with tmp.open("w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(_messages_row(row, config), ensure_ascii=False) + "\n")
        elif fmt == "sharegpt":
            tmp.write_text(json.dumps([_sharegpt_row(r, config) for r in rows], ensure_ascii=False, indent=1),
                           encoding="utf-8")
        else:
            message = pa.struct([("role", pa.string()), ("content", pa.string())])
            schema = pa.schema([("messages", pa.list_(message)), ("id", pa.string()), ("source", pa.string()),
                                ("domain", pa.string())])
            pq.write_table(pa.Table.from_pylist([_messages_row(r, config) for r in rows], schema=schema), tmp)
        tmp.replace(path)
        written[fmt] = str(path)
    if written:
        info = dataset_info(written, has_system=bool(config.system))
        (target / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return written


def dataset_info(written: dict[str, str], has_system: bool = False) -> dict:
    """LLaMA-Factory's ``dataset_info.json`` entries for the exported files."""
    openai_tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                   "assistant_tag": "assistant", "system_tag": "system"}
    info = {}
    if "messages" in written:
        info["longcot_messages"] = {"file_name": Path(written["messages"]).name, "formatting": "sharegpt",
                                    "columns": {"messages": "messages"}, "tags": openai_tags}
    if "parquet" in written:
        info["longcot_parquet"] = {"file_name": Path(written["parquet"]).name, "formatting": "sharegpt",
                                   "columns": {"messages": "messages"}, "tags": openai_tags}
    if "sharegpt" in written:
        columns = {"messages": "conversations", **({"system": "system"} if has_system else {})}
        info["longcot_sharegpt"] = {"file_name": Path(written["sharegpt"]).name, "formatting": "sharegpt",
                                    "columns": columns}
    return info
