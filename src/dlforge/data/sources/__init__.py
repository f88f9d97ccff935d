"""Where datasets come from: one class per dataset (or family of datasets), built from the `data.source`
config node and handed to a DataModule, which asks it only what its kind's Protocol declares
(`ImageSource`, `LabelledTextSource`, `CorpusSource`). A new dataset is a new class here and a
`conf/data/` option naming it; no DataModule changes."""

from __future__ import annotations

from typing import Protocol


class Source(Protocol):
    """What every kind of source tells its DataModule and the data preparation."""

    name: str  # names the dataset in messages (and in the paths of files prepared from it)
    needs_download: bool  # fetched from the internet with data.download=true, not made from installed packages


class DataFromSource(Protocol):
    """A DataModule of this package: it reads one source."""

    source: Source

    def prepare_data(self) -> None: ...

    def setup(self, stage: str | None = None) -> None: ...
