"""Local servers on 127.0.0.1 standing in for the internet in tests of downloads and W&B: one that
serves files, one that accepts connections and then stalls (after sending nothing, or part of an
answer), one that answers HEAD and GET but never a POST (a W&B host whose API hangs), and a port that
refuses connections. Each stops when its `with` block ends."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_server(directory: Path) -> Iterator[str]:
    """An HTTP server of the files in `directory`; yields its base URL."""
    handler = functools.partial(_QuietFileHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def head_only_server() -> Iterator[str]:
    """An HTTP server that answers HEAD and GET with an empty 200 and holds every POST unanswered until
    its `with` block ends; yields its base URL."""
    released = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def do_POST(self):
            released.wait()

        def log_message(self, format, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            released.set()
            server.shutdown()


@contextlib.contextmanager
def stalling_server(sent: bytes = b"") -> Iterator[str]:
    """A server that accepts every connection, sends `sent` (nothing: it never answers) and then holds
    the connection open in silence; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                connection, _ = listener.accept()
                held.append(connection)
                connection.sendall(sent)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for connection in held:
            connection.close()


def refusing_url() -> str:
    """The URL of a local port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"
