"""Fetching a dataset's published files: whole or not at all, with a progress bar, never hanging.

A download is written to a temporary file beside its destination and renamed only when every byte
arrived (and matches the published MD5, where there is one): a failure or an interrupt leaves no
partial file. `timeout` bounds every wait on the server (connecting, its first answer, each next
chunk), so a server that accepts and never answers, or stops halfway, fails the download after that
many seconds of silence instead of hanging; a slow but steady one is not cut off.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from tqdm import tqdm

from dlforge.constraints import Positive
from dlforge.errors import DataError
from dlforge.files import replacing

log = logging.getLogger(__name__)

# Every source that downloads takes `download_timeout: DownloadTimeout = DEFAULT_TIMEOUT`: the seconds
# without data from the server after which a download fails (conf/data/: data.source.download_timeout).
DownloadTimeout = Annotated[float, Positive]
DEFAULT_TIMEOUT = 30.0
TIMEOUT_OPTION = "data.source.download_timeout"
CHUNK_BYTES = 1 << 16


class _Failed(Exception):
    """Why one URL did not deliver the file."""


def fetch(urls: str | Sequence[str], path: Path, timeout: float, md5: str | None = None) -> None:
    """Fetch `path` from the first of `urls` (mirrors of one file) that delivers it whole; DataError
    naming every URL and why it failed otherwise."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            _fetch_one(url, path, timeout, md5)
            return
        except _Failed as failure:
            failures.append(f"{url} ({failure})")
    raise DataError(f"could not download {' or '.join(failures)} to {path}")


def _fetch_one(url: str, path: Path, timeout: float, md5: str | None) -> None:
    log.info(f"downloading {url} to {path}")
    request = urllib.request.Request(url, headers={"User-Agent": "dlforge"})  # some hosts refuse urllib's
    received, digest = 0, hashlib.md5()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, replacing(path) as file:
            length = response.headers.get("Content-Length")  # absent when the server does not say
            expected = int(length) if length else None
            with tqdm(total=expected, desc=path.name, unit="B", unit_scale=True, unit_divisor=1024) as progress:
                while chunk := response.read1(CHUNK_BYTES):  # what has arrived, not waiting for a full chunk
                    file.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
            # http.client ends a body cut short silently (it does not raise IncompleteRead on chunked reads)
            if expected is not None and received < expected:
                raise _Failed(f"the connection closed after {received} of {expected} bytes")
            if md5 is not None and digest.hexdigest() != md5:
                raise _Failed(f"MD5 {digest.hexdigest()} is not the published {md5}")
    except (OSError, http.client.HTTPException) as error:
        raise _Failed(_reason(error, timeout, received)) from error


def _reason(error: Exception, timeout: float, received: int) -> str:
    # urlopen raises a timeout while connecting as URLError(TimeoutError), one while awaiting the answer bare
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason
    if isinstance(error, TimeoutError):
        after = f" after {received} bytes" if received else ""
        return f"no data for {timeout:g} s{after}; {TIMEOUT_OPTION}={timeout:g}"
    return str(error)
