#!/usr/bin/python3
"""Defect 7: EHLO/HELO arguments were not checked; "EHLO evil.test\\rX-Injected:
via-helo" was echoed and written into the Received header verbatim, and NUL
and ESC were accepted. Now they get 501 and nothing of them is stored."""
import socket
import sys
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, read_reply  # noqa: E402


def dialog(port, lines):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        replies = []

        read_reply(f)
        for line in lines:
            s.sendall(line)
            replies.append(read_reply(f))
        return replies


class HeloInjectionTest(unittest.TestCase):
    def test_bad_helo_is_refused_and_never_reaches_a_header(self):
        d = Daemon()
        try:
            for bad in (b"EHLO evil.test\rX-Injected: via-helo\r\n",
                        b"HELO evil.test\rX-Injected: via-helo\r\n",
                        b"EHLO a\x00b\r\n", b"EHLO \x1b[31mred\r\n"):
                r = dialog(d.port, [bad, b"MAIL FROM:<a@sender.test>\r\n"])
                self.assertTrue(r[0].startswith(b"501"), r)
                self.assertNotIn(b"Injected", r[0])
                self.assertTrue(r[1].startswith(b"503"), r)  # No HELO taken.
            r = dialog(d.port, [b"EHLO good.test\r\n",
                                b"MAIL FROM:<a@sender.test>\r\n",
                                b"RCPT TO:<b@dest.test>\r\n", b"DATA\r\n",
                                b"Subject: x\r\n\r\nbody\r\n.\r\n"])
            self.assertTrue(r[-1].startswith(b"250"), r)
            listing = d.queue("list")
            self.assertIn("sender.test", listing)
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
