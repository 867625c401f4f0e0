#!/usr/bin/python3
"""Defect 8: mail submitted without Message-ID and Date went out without
them (RFC 6409 §8.3 says a submission server adds them; Gmail refuses mail
without a Message-ID). Now the submission listeners add what is missing,
inside the DKIM signature; the relay port passes mail on as it came."""
import re
import smtplib
import sys
import tempfile
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon, RawSink, add_user, smarthost_to  # noqa: E402


class SubmissionFieldsTest(unittest.TestCase):
    def test_submission_adds_message_id_and_date_relay_does_not(self):
        data = tempfile.mkdtemp(dir=TMP)
        add_user(data, "app", "app-password")
        sink = RawSink()
        d = Daemon("[auth]\nallow_without_tls = true\n" +
                   smarthost_to(sink.port), data=data)
        try:
            bare = "From: app@sender.test\r\nSubject: bare\r\n\r\nhi\r\n"
            with smtplib.SMTP("127.0.0.1", d.submission,
                              local_hostname="app.test", timeout=10) as s:
                s.login("app", "app-password")
                s.sendmail("app@sender.test", ["a@dest.test"], bare)
            self.assertEqual(sink.wait_for(1), 1)
            with d.smtp() as s:
                s.sendmail("app@sender.test", ["b@dest.test"],
                           bare.replace("bare", "relayed"))
            self.assertEqual(sink.wait_for(2), 2)
            by_subject = {re.search(rb"Subject: (\w+)", m).group(1): m
                          for m in sink.messages}
            submitted = by_subject[b"bare"].split(b"\r\n\r\n")[0]
            self.assertRegex(submitted, rb"\r\nMessage-ID: <\d{14}\.[0-9a-f]{16}@")
            self.assertRegex(submitted,
                             rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} [\d:]{8} \+0000")
            relayed = by_subject[b"relayed"].split(b"\r\n\r\n")[0]
            self.assertNotIn(b"Message-ID", relayed)
            self.assertNotIn(b"\r\nDate:", relayed)
            # A client's own fields are kept, not doubled.
            sink.messages.clear()
            own = ("Message-ID: <mine@app.test>\r\nDate: Thu, 26 Nov 2026 "
                   "10:00:00 +0100\r\n" + bare)
            with smtplib.SMTP("127.0.0.1", d.submission,
                              local_hostname="app.test", timeout=10) as s:
                s.login("app", "app-password")
                s.sendmail("app@sender.test", ["c@dest.test"], own)
            self.assertEqual(sink.wait_for(1), 1)
            head = sink.messages[0].split(b"\r\n\r\n")[0]
            self.assertEqual(head.lower().count(b"message-id:"), 1)
            self.assertIn(b"<mine@app.test>", head)
        finally:
            d.stop()
            sink.stop()


if __name__ == "__main__":
    unittest.main()
