"""dlforge: Hydra-composed, reproducible deep-learning experiments on Lightning.

Importing the package is cheap (no torch): the entry scripts compose configs before any heavy import.
"""
