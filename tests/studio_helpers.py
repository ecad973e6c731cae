"""The studio's page served for a test: on a free port of 127.0.0.1, closed afterwards."""

from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(studio):
    """``studio``'s page, running: its address."""
    from ale_edit.studio import serve

    port = free_port()
    app = serve(studio, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
