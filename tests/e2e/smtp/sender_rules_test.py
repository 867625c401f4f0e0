#!/usr/bin/env python3
"""Sender rules on submission: a user limited with `peregrine user senders`
may use only its addresses and domains, in MAIL FROM (553 naming them) and
in the From header (550 after DATA); allowed mail is delivered; `user
list` shows the rules; a running daemon picks the change up by itself."""
import os
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, Daemon, Nsd, Sink, add_user  # noqa: E402


def insecure():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SenderRulesTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"]})
        self.data = tempfile.mkdtemp(dir=TMP)
        add_user(self.data, "metabase", "correct-horse")
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n",
                        data=self.data)

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.nsd.stop()
        self.sink.stop()

    def user(self, *args):
        return subprocess.run([PEREGRINE, "user", *args, "--data-dir",
                               self.data], capture_output=True, text=True,
                              timeout=30)

    def session(self):
        s = smtplib.SMTP("127.0.0.1", self.d.submission,
                         local_hostname="c.test", timeout=10)
        s.starttls(context=insecure())
        s.login("metabase", "correct-horse")
        return s

    def test_only_its_own_addresses(self):
        r = self.user("senders", "metabase", "reports@corp.test", "@news.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("metabase  sends as reports@corp.test, @news.test",
                      self.user("list").stdout)
        time.sleep(1.2)  # The daemon looks at the users file every second.
        with self.session() as s:
            with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                s.sendmail("ceo@corp.test", ["a@dest.test"],
                           "Subject: x\r\n\r\nbody\r\n")
            self.assertEqual(e.exception.smtp_code, 553)
            self.assertIn(b"may send as reports@corp.test, @news.test",
                          e.exception.smtp_error)
        with self.session() as s:
            # The envelope is allowed, the From header is not.
            with self.assertRaises(smtplib.SMTPDataError) as e:
                s.sendmail("reports@corp.test", ["a@dest.test"],
                           "From: The CEO <ceo@corp.test>\r\nSubject: x\r\n"
                           "\r\nbody\r\n")
            self.assertEqual(e.exception.smtp_code, 550)
            self.assertIn(b"From: <ceo@corp.test> not allowed",
                          e.exception.smtp_error)
            # Both allowed: delivered.
            s.sendmail("weekly@news.test", ["b@dest.test"],
                       "From: News <weekly@news.test>\r\nSubject: ok\r\n"
                       "\r\nbody\r\n")
        self.assertEqual(self.sink.wait_for(1), 1)
        with open(self.sink.messages()[0]) as f:
            self.assertIn("Subject: ok", f.read())
        # Rules cleared: any sender again.
        self.assertEqual(self.user("senders", "metabase").returncode, 0)
        time.sleep(1.2)
        with self.session() as s:
            s.sendmail("ceo@corp.test", ["c@dest.test"],
                       "From: ceo@corp.test\r\nSubject: any\r\n\r\nbody\r\n")
        self.assertEqual(self.sink.wait_for(2), 2)

    def test_a_message_rate_per_user(self):
        r = self.user("rate", "metabase", "2/h")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("metabase  at most 2/h", self.user("list").stdout)
        time.sleep(1.2)
        with self.session() as s:
            for i in range(2):
                s.sendmail("a@corp.test", ["a@dest.test"],
                           f"Subject: {i}\r\n\r\nbody\r\n")
            with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                s.sendmail("a@corp.test", ["a@dest.test"],
                           "Subject: 3\r\n\r\nbody\r\n")
            self.assertEqual(e.exception.smtp_code, 452)
            self.assertIn(b"over its message rate (2/h)",
                          e.exception.smtp_error)
        self.assertEqual(self.user("rate", "metabase", "lots").returncode, 2)

    def test_bad_rules_are_refused(self):
        r = self.user("senders", "metabase", "not-an-address")
        self.assertEqual(r.returncode, 2)
        self.assertIn("give an address", r.stderr)
        r = self.user("senders", "nobody", "a@b.test")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no user 'nobody'", r.stderr)


if __name__ == "__main__":
    unittest.main()
