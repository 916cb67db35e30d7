"""Shipped benchmark data: one YAML entry and one JSONL file per benchmark (see LICENSES.md)."""
