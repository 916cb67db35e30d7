"""Structure-vs-content ablation sweeps (Li et al. 2025): dataset variants trained, evaluated, tabulated."""
