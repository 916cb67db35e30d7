"""Reading a YAML file that a person wrote: one error, of the caller's type, naming the file and, for a
syntax error, the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from longcot.errors import ConfigError, LongcotError


def read_yaml(path: str | Path, *, what: str = "config", error: type[LongcotError] = ConfigError) -> Any:
    """The parsed contents of ``path`` (None for an empty file). An unreadable file raises ``error`` with
    ``PATH: cannot read the WHAT: REASON``, invalid YAML ``PATH:LINE: invalid YAML: PROBLEM``."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{p}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise error(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
