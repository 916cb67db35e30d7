"""Structure-vs-content perturbations of long CoT traces (Li et al. 2025)."""
