"""Raw text corpora for language modelling, each read as one string.

PydocTopics: the help topics that ship with Python (`pydoc_data.topics`, ~465k characters of English
  about Python), so it works offline. Its text follows the Python version.
TinyShakespeare: Karpathy's char-rnn corpus (~1.1M characters), read from `root/tiny_shakespeare/`,
  downloaded there on request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from dlforge.data.download import DEFAULT_TIMEOUT, DownloadTimeout, fetch
from dlforge.data.files import reading
from dlforge.data.sources import Source
from dlforge.errors import DataError

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


class CorpusSource(Source, Protocol):
    """What LanguageModelData asks of a corpus: its whole text (`name` also names the folder its token
    streams are prepared in)."""

    def text(self, root: Path, download: bool) -> str:
        """The corpus, the same string every time; fetched into `root` first if `download` and missing."""
        ...


class PydocTopics:
    name = "pydoc_topics"
    needs_download = False

    def text(self, root: Path, download: bool) -> str:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[topic] for topic in sorted(topics))  # sorted: the same text every time


class TinyShakespeare:
    name = "tiny_shakespeare"
    needs_download = True

    def __init__(self, download_timeout: DownloadTimeout = DEFAULT_TIMEOUT):
        self.download_timeout = download_timeout

    def text(self, root: Path, download: bool) -> str:
        path = Path(root) / "tiny_shakespeare" / "input.txt"
        if not path.is_file():
            if not download:
                raise DataError(
                    f"tiny_shakespeare not found at {path}; fetch it with "
                    "`python src/train.py data=shakespeare_lm data.download=true` (needs internet)"
                )
            fetch(TINY_SHAKESPEARE_URL, path, self.download_timeout)
        with reading(path):
            text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DataError(f"{path} is empty: delete it and fetch it again with data.download=true")
        return text
