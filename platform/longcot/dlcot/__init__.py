"""DLCoT: segment long CoT traces, simplify away unsolvable and redundant approaches, optimise error states."""
