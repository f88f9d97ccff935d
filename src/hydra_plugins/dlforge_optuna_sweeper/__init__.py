"""Hydra sweeper `hydra/sweeper=dlforge_optuna`: Optuna studies with pruning, persistent and resumable,
shared by parallel workers. `hydra_plugins` is a namespace package that Hydra scans for plugins."""
