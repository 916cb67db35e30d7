"""``python -m longcot`` is the ``longcot`` command."""

from longcot.cli import main

main()
