#!/usr/bin/python3
"""Defect 16: rejections left no trace in the log: a 552 for size, a relay
refusal, a TLS handshake failure, plain SMTP sent to the implicit-TLS port
(which then waited for a greeting that never came). Now each is logged once
per connection with the client's address and what it probably did wrong."""
import re
import smtplib
import socket
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon  # noqa: E402


class RejectionsLoggedTest(unittest.TestCase):
    def test_each_refusal_is_logged_once_with_a_reason(self):
        d = Daemon("[smtp]\nmax_message_size = \"10KiB\"\n"
                   "[relay]\ntrusted_networks = [\"127.0.0.2\"]\n")
        try:
            # Untrusted (127.0.0.1 is not trusted here): relay refused, twice.
            with smtplib.SMTP("127.0.0.1", d.port, local_hostname="c.test",
                              timeout=10) as s:
                s.ehlo()
                s.mail("a@sender.test")
                for rcpt in ("x@elsewhere.test", "y@elsewhere.test"):
                    self.assertEqual(s.rcpt(rcpt)[0], 554)
            # Too big, from a trusted address.
            with smtplib.SMTP("127.0.0.1", d.port, local_hostname="c.test",
                              timeout=10, source_address=("127.0.0.2", 0)) as s:
                with self.assertRaises(smtplib.SMTPException):
                    s.sendmail("a@sender.test", ["b@dest.test"],
                               "Subject: big\r\n\r\n" + "x" * 20000 + "\r\n")
            # A broken TLS handshake after STARTTLS.
            with socket.create_connection(("127.0.0.1", d.port), 10) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(b"EHLO c.test\r\n")
                while f.readline()[3:4] == b"-":
                    pass
                s.sendall(b"STARTTLS\r\n")
                f.readline()
                s.sendall(b"\x16\x03\x01\x00\x05hello")  # Not a ClientHello.
                s.settimeout(5)
                try:
                    s.recv(100)
                except OSError:
                    pass
            # Plain SMTP to the implicit-TLS port.
            with socket.create_connection(("127.0.0.1", d.submissions), 10) as s:
                s.sendall(b"EHLO c.test\r\n")
                s.settimeout(5)
                try:
                    s.recv(100)
                except OSError:
                    pass
            # A client that waits for a greeting on the implicit-TLS port.
            silent = socket.create_connection(("127.0.0.1", d.submissions), 10)
            silent.settimeout(20)
            t = time.time()
            self.assertEqual(silent.recv(100), b"")  # Closed by the daemon.
            self.assertLess(time.time() - t, 15)
            silent.close()
            time.sleep(0.2)
            with open(d.log.name) as f:
                log = f.read()
            relay = re.findall(r"refused 127.0.0.1 on the relay port: 554 .*"
                               r"Relay access denied \(the client is not in "
                               r"relay.trusted_networks", log)
            self.assertEqual(len(relay), 1, log)  # Once per connection.
            self.assertRegex(log, r"refused 127.0.0.2 on the relay port: 552 "
                                  r".*over smtp.max_message_size \(10240 bytes\)")
            self.assertRegex(log, r"TLS handshake with 127.0.0.1 failed")
            self.assertRegex(log, r"refused 127.0.0.1 on the implicit-TLS port: "
                                  r"it spoke plain SMTP \(\"EHLO c.test\"\)")
            self.assertRegex(log, r"closed 127.0.0.1 on the implicit-TLS port: "
                                  r"it sent nothing for 10s")
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
