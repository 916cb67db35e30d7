"""The ``longcot`` command. Thin: each subcommand parses options into a stage config and calls the stage.

Subcommands live one module per stage in this package and register themselves on ``app``; ``main``
turns every ``LongcotError`` into one line on stderr and its exit status, and so an error writing a path.

Exit statuses: 0 done; 1 an unexpected failure (a bug: the traceback is printed); 2 usage or configuration
(a bad option or YAML field, an output that would overwrite the input, a path that cannot be written);
3 input (a file that is missing, unreadable as a whole, or empty); 4 the cluster cannot run a stage;
130 interrupted. Rows of an input that cannot be processed never stop a run: they go to the stage's
rejected file with their reason.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from longcot.errors import LongcotError

app = typer.Typer(
    name="longcot",
    help="Distil long chain-of-thought reasoning from a teacher into a student, on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)


def _register_commands() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{module.name}")


def main(argv: list[str] | None = None) -> None:
    _register_commands()
    try:
        app(args=argv, standalone_mode=True)
    except LongcotError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err.print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        sys.exit(130)
    except OSError as exc:  # an unwritable output, a full disk: one line naming the path, not a traceback
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err.print(f"[red]error:[/] {where}{exc.strerror or exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
