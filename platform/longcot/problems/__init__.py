"""Problem sources: local files, Hugging Face datasets, the shipped benchmarks, reasoning-gym."""
