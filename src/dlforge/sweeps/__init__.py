"""Optuna studies: the sweeper side (`study`), the trial side (`trial`) and the storage they share."""
