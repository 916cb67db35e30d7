"""Evaluation: benchmarks, pass@k, token efficiency, side-by-side reports."""
