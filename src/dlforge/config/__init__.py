"""Composing, checking and building configs: the signatures of the `_target_`s are the schema."""
