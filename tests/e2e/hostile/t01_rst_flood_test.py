#!/usr/bin/python3
"""Defect 1: a client pipelines ~2 MiB of NOOP without reading the replies
and resets the connection (SO_LINGER 0). A read that completed before the
reset used to re-arm the connection's timer after the connection was
freed; `command_timeout` later the daemon crashed. It must survive past
the timeout and still serve."""
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon  # noqa: E402


def rst_flood(port, total=2 << 20):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    chunk = b"NOOP\r\n" * 10000
    sent = 0
    s.setblocking(False)
    deadline = time.time() + 5
    while sent < total and time.time() < deadline:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            time.sleep(0.001)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST.
    return sent


class RstFloodTest(unittest.TestCase):
    def test_survives_reset_flood_past_command_timeout(self):
        d = Daemon(extra='[smtp]\ncommand_timeout = "2s"\n')
        try:
            for _ in range(20):
                rst_flood(d.port)
            time.sleep(3.5)  # Past command_timeout: the timers fire.
            self.assertIsNone(d.proc.poll(), "daemon died")
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["b@dest.test"],
                           "Subject: after\r\n\r\nstill here\r\n")
            self.assertIsNone(d.proc.poll())
        finally:
            code = d.stop()
        self.assertEqual(code, 0)


if __name__ == "__main__":
    unittest.main()
