"""A training run's plumbing: run dir, lineage, checkpoints, resume, loggers, the end-of-run report."""
