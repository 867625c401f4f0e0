#!/usr/bin/python3
"""Delivery end to end: the daemon, NSD on loopback giving MX records, and
Postfix's smtp-sink as the destinations, with its fault options.

Nothing leaves 127.0.0.0/8: MX hosts resolve to 127.0.0.x, and the daemon's
DNS server is the NSD started here.
"""
import os
import re
import smtplib
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, Nsd, Sink, free_port  # noqa: E402


def send(d, recipients, count=1, subject="hello", body="test\r\n"):
    with d.smtp() as s:
        for i in range(count):
            s.sendmail("sender@src.test", recipients,
                       f"Subject: {subject} {i}\r\n\r\n{body}")


def log_of(d):
    with open(os.path.join(d.data, "daemon.log")) as f:
        return f.read()


def wait_log(d, pattern, count=1, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(re.findall(pattern, log_of(d))) >= count:
            return True
        time.sleep(0.1)
    return False


class DeliveryTest(unittest.TestCase):
    def daemon(self, nsd, sink_port, extra=""):
        return Daemon(nsd.dns_config() +
                      f"[delivery]\nport = {sink_port}\n"
                      'retry_first = "1s"\nretry_max = "2s"\n'
                      'idle_timeout = "1s"\nconnect_timeout = "2s"\n' + extra)

    def test_delivers_by_mx_and_empties_the_queue(self):
        sink = Sink()
        nsd = Nsd({"dest.test": ["@ IN MX 10 mx1.dest.test.",
                                 "mx1 IN A 127.0.0.1"],
                   "other.test": ["@ IN MX 5 mx1.dest.test."]})
        d = self.daemon(nsd, sink.port)
        try:
            send(d, ["a@dest.test", "b@dest.test", "c@other.test"], count=3)
            self.assertEqual(sink.wait_for(6), 6)  # 3 x (dest, other).
            self.assertTrue(wait_log(d, r"delivered id=", 9))
            log = log_of(d)
            self.assertIn("host=mx1.dest.test[127.0.0.1]", log)
            self.assertRegex(log, r'reply="250 ')
            dump = open(sink.messages()[0], errors="replace").read()
            self.assertIn("Subject: hello", dump)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.queue("list").strip(), "", "queue not empty")
        except BaseException:
            print(log_of(d))
            print(open(sink.dir + ".log").read())
            raise
        finally:
            if d.proc.poll() is None:
                d.stop()
            nsd.stop()
            sink.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
