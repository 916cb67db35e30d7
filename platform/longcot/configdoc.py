"""The configuration reference, generated from the pydantic models (so it never drifts from the code)."""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from longcot.config import STAGE_ORDER, JobConfig


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args) + (" or null" if type(None) in get_args(annotation) else "")
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _default(field) -> str:
    if field.is_required():
        return "required"
    try:
        value = field.get_default(call_default_factory=True)
    except (TypeError, ValueError):  # a factory that needs the other fields' values: no default to show
        return ""
    if isinstance(value, BaseModel):
        return ""
    return "`null`" if value is None else f"`{value!r}`"


def markdown_reference() -> str:
    """Markdown tables: one per top-level section of a job YAML, nested models inline by dotted key."""
    out = []
    sections = [("", JobConfig)]
    seen: set[type[BaseModel]] = set()  # each model is documented once, under the first key that uses it
    while sections:
        prefix, model = sections.pop(0)
        if model in seen:
            continue
        seen.add(model)
        rows = []
        for name, field in model.model_fields.items():
            is_list = list in (get_origin(t) for t in (field.annotation, *get_args(field.annotation)))
            sections += [(f"{prefix}{name}{'[]' if is_list else ''}.", sub) for sub in _models_in(field.annotation)]
            if not prefix and name in STAGE_ORDER:
                continue  # a stage has a table of its own, not a row in the job's
            desc = (field.description or "").replace("\n", " ").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        title = f"`{prefix.rstrip('.')}` ({model.__name__})" if prefix else "Job"
        doc = (model.__doc__ or "").strip().partition("\n")[0]
        out.append(f"#### {title}\n\n{doc}\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n"
                   + "\n".join(rows) + "\n")
    return "\n".join(out)
