"""Objectives: one LightningModule per kind of objective, each taking any suitable network."""
