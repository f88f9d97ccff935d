"""Lightning callbacks, one module per concern: `progress` (the tqdm bar), `divergence` (stop on a
non-finite loss), `curves` (validation curves as CSV), `checkpoints` (resume checkpoints, preemption
signals), `resume` (exact resume: RNG and metric states), `lineage` (recording the run's lineage),
`pruning` (Optuna trial pruning), `media` (test artifacts and sample media in W&B).

Callbacks get what they need from whoever builds them (`dlforge.run.training` or the `callbacks`
config group); they never import `dlforge.run` or `dlforge.tasks`.
"""
