"""Shared by the end-to-end tests: where things are, and free loopback ports.

Tests run from the runfiles root, so paths are relative to the repository.
"""
import os
import socket
import tempfile

PEREGRINE = os.path.abspath("mta/peregrine")
NO_IO_URING = os.path.abspath("tests/e2e/no_io_uring")
TMP = os.environ.get("TEST_TMPDIR", tempfile.gettempdir())


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
