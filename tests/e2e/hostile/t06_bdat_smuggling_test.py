#!/usr/bin/python3
"""Defect 6: BDAT content used to be stored as sent, and outbound
dot-stuffing looked only after LF, so `BDAT n LAST` carrying
"hello\\r.\\rMAIL FROM:<evil@...>" reached the next hop byte for byte, where a
server that ends data at "\\r.\\r" saw a second, forged transaction. Now the
next hop gets CRLF line ends only, and the dot stuffed."""
import socket
import sys
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, RawSink, read_reply, smarthost_to  # noqa: E402


def bdat_dialog(port, chunk):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")

        read_reply(f)
        for cmd in (b"EHLO client.test\r\n", b"MAIL FROM:<a@sender.test>\r\n",
                    b"RCPT TO:<b@anywhere.test>\r\n"):
            s.sendall(cmd)
            assert read_reply(f).startswith(b"250"), cmd
        s.sendall(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        r = read_reply(f)
        s.sendall(b"QUIT\r\n")
        return r


class BdatSmugglingTest(unittest.TestCase):
    def test_next_hop_gets_no_bare_cr_or_lf(self):
        sink = RawSink()
        d = Daemon(smarthost_to(sink.port))
        try:
            chunk = (b"Subject: x\r\n\r\nhello\r.\rMAIL FROM:<evil@x.test>\r"
                     b"RCPT TO:<victim@x.test>\rDATA\rforged\r.\rbare\nlf\r\n")
            self.assertTrue(bdat_dialog(d.port, chunk).startswith(b"250"))
            self.assertEqual(sink.wait_for(1), 1)
            wire = sink.messages[0]
            for i, c in enumerate(wire):
                if c == 0x0D:
                    self.assertEqual(wire[i + 1:i + 2], b"\n", wire)
                if c == 0x0A:
                    self.assertEqual(wire[i - 1:i], b"\r", wire)
            # One end of data, at the end; the smuggled dot is stuffed.
            self.assertEqual((b"\r\n" + wire).count(b"\r\n.\r\n"), 1)
            self.assertIn(b"hello\r\n..\r\nMAIL FROM:<evil@x.test>\r\n", wire)
        finally:
            d.stop()
            sink.stop()


if __name__ == "__main__":
    unittest.main()
