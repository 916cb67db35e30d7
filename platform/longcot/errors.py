"""Typed errors. The CLI turns each into one line a person can act on (see ``cli.main``)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class LongcotError(Exception):
    """Base class: every error longcot raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(LongcotError):
    """A job YAML or a CLI option is invalid. Names the field and, where known, the allowed values."""

    exit_code = 2


def validated(model: type[M], data: object, source: str) -> M:
    """``model`` from ``data``; invalid data is one ``ConfigError`` naming ``source`` and each bad field, one line
    per problem: ``source: field.path: message`` (a choice also says what it got)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    lines = []
    for err in errors:
        loc = ".".join(str(part) for part in err["loc"] if not str(part).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error" and "expected" in (err.get("ctx") or {}):
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    raise ConfigError("\n".join(lines))


class InputError(LongcotError):
    """An input file cannot be used at all (unreadable, wrong format, a column missing everywhere).

    ``path`` and ``line`` (1-based, when known) say where.
    """

    exit_code = 3

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        if path is not None:
            message = f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"
        super().__init__(message)


class ResourceError(LongcotError):
    """The cluster can never satisfy what a stage asks for (a GPU on a CPU-only cluster, say)."""

    exit_code = 4


class RejectRow(Exception):
    """Raised by a row function for a row it cannot process; the row goes to the rejected file with ``reason``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
