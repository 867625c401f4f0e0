#!/usr/bin/python3
"""Delivery with CHUNKING (RFC 3030): to a server that offers it with
PIPELINING, Peregrine sends MAIL, every RCPT and "BDAT n LAST" with the
message in one write. Postfix's smtpd (which offers both) is the
receiver: it must take the message whole, lines starting with "." and
8-bit text untouched, with the final reply for every recipient (the
refused cases are in tests/mta/smtp/client_session_test); and a server
without CHUNKING still gets DATA."""
import sys
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (Daemon, Postfix, RawSink, free_port,  # noqa: E402
                     wait_until)


def through(host, port):
    return (f'[delivery]\n[smarthost]\nhost = "{host}"\nport = {port}\n'
            'tls = "none"\n')


BODY = ("Subject: chunked\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        ".a line with a dot\r\n.\r\nnot the end\r\ncaf\u00e9\r\n")


class ChunkingTest(unittest.TestCase):
    def test_postfix_takes_the_message_whole_by_bdat(self):
        sink = RawSink()
        port = free_port()
        pf = Postfix("127.0.0.3", port, f"[127.0.0.1]:{sink.port}")
        d = Daemon(through("127.0.0.3", port))
        try:
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["x@far.test", "y@far.test"],
                           BODY.encode())
            self.assertEqual(sink.wait_for(1, timeout=30), 1)
            got = sink.messages[0]
            # What Postfix sent on is the message as it was: the lines
            # that start with "." (dot-stuffed again on its DATA) and the
            # 8-bit text.
            self.assertIn(b"\r\n..a line with a dot\r\n..\r\nnot the end\r\n",
                          got)
            # Postfix keeps the 8-bit text (it re-encodes it for a next
            # hop without 8BITMIME, as this sink is).
            self.assertTrue("caf\u00e9".encode() in got or b"caf=C3=A9" in got,
                            got)
            log = open(d.log.name).read()
            # Both recipients got BDAT's final reply (Postfix says how many
            # bytes it queued: the whole message, counted by Postfix).
            self.assertEqual(log.count("delivered id="), 2, log)
            self.assertRegex(log, r'reply="250 2\.0\.0 Ok: \d+ bytes queued')
        finally:
            d.stop()
            pf.stop()
            sink.stop()

    def test_bdat_on_the_wire_with_refused_recipients(self):
        # One recipient refused at RCPT: the message still goes, by BDAT,
        # for the other; the refused one fails with the server's reply.
        sink = RawSink(chunking=True,
                       refuse={"no@far.test": "550 5.1.1 no such user"})
        d = Daemon(through("127.0.0.1", sink.port))
        try:
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["x@far.test", "no@far.test"],
                           BODY.replace("caf\u00e9", "cafe").encode())
            self.assertEqual(sink.wait_for(1, timeout=30), 1)
            self.assertEqual(sink.bdat, 1)
            got = sink.messages[0]
            # As it was: no dot-stuffing, no end-of-data line.
            self.assertTrue(got.endswith(
                b"\r\n.a line with a dot\r\n.\r\nnot the end\r\ncafe\r\n"),
                got)
            self.assertEqual(sink.envelopes[0][1], ["x@far.test"])
            self.assertTrue(wait_until(
                lambda: "failed id=" in open(d.log.name).read()))
            log = open(d.log.name).read()
            self.assertRegex(log, r"delivered id=\S+ to=<x@far\.test>")
            self.assertRegex(log, r"failed id=\S+ to=<no@far\.test>.*"
                                  r"550 5\.1\.1 no such user")
        finally:
            d.stop()
            sink.stop()

    def test_a_server_without_chunking_gets_data(self):
        sink = RawSink()  # Offers nothing: no CHUNKING, no 8BITMIME.
        d = Daemon(through("127.0.0.1", sink.port))
        try:
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["x@far.test"],
                           BODY.replace("caf\u00e9", "cafe").encode())
            self.assertEqual(sink.wait_for(1, timeout=30), 1)
            self.assertIn(b"\r\n..a line with a dot\r\n..\r\n",
                          sink.messages[0])
        finally:
            d.stop()
            sink.stop()


if __name__ == "__main__":
    unittest.main()
