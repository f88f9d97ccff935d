"""Passwords in URLs (`postgresql://user:pass@host/db`) are never recorded: every file that records a
config or a command line (`.hydra/`, `multirun.yaml`, `lineage.yaml`, checkpoints, the W&B config)
shows them as `user:***@host`, as SQLAlchemy's `render_as_string(hide_password=True)` would; so do
the logs and a sweep's `best.yaml`. The running job keeps the real values."""

from __future__ import annotations

import re
from typing import Any

# scheme://user:password@ as SQLAlchemy's `make_url` parses it: the user ends at `:` or `/`, the password at `@`
_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@]+@")


def mask_urls(value: Any) -> Any:
    """`value` (a string, or nested dicts and lists of them) with the password of every URL replaced by `***`."""
    if isinstance(value, str):
        return _CREDENTIALS.sub(r"\1***@", value)
    if isinstance(value, dict):
        return {key: mask_urls(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_urls(item) for item in value]
    return value
