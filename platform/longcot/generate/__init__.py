"""Teacher rollouts: problems in, one trace record per sample out."""
