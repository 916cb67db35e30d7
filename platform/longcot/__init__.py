"""longcot: distil long chain-of-thought reasoning from a teacher into a student, on Ray."""

__version__ = "0.1.0"
