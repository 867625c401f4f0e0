#!/usr/bin/env python3
"""Every golden DSN (testdata/*.eml, written by BuildDsn) parsed by Python's
email package: a multipart/report of report-type delivery-status with a
text part, a message/delivery-status part whose recipient blocks name the
right recipient, action and status, and the returned message or headers."""
import email
import email.policy
import glob
import os
import sys
import unittest

HERE = os.path.join("tests", "mta", "bounce", "testdata")

EXPECTED = {
    "failure_full.eml": [("alice@dest.example", "failed", "5.1.1"),
                         ("bob@dest.example", "failed", "5.2.2")],
    "failure_hdrs.eml": [("alice@dest.example", "failed", "5.1.1")],
    "expiry.eml": [("carol@slow.example", "failed", "4.4.1")],
    "delay.eml": [("alice@dest.example", "delayed", "4.7.1")],
}


class DsnEmailTest(unittest.TestCase):
    def test_every_golden_dsn(self):
        files = sorted(glob.glob(os.path.join(HERE, "*.eml")))
        self.assertEqual({os.path.basename(f) for f in files}, set(EXPECTED))
        for path in files:
            with self.subTest(path=path):
                with open(path, "rb") as f:
                    raw = f.read()
                self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                self.assertEqual(msg.get_content_type(), "multipart/report")
                self.assertEqual(msg.get_param("report-type"),
                                 "delivery-status")
                self.assertEqual(msg["Auto-Submitted"], "auto-replied")
                parts = list(msg.iter_parts())
                self.assertEqual(len(parts), 3)
                self.assertEqual(parts[0].get_content_type(), "text/plain")
                self.assertEqual(parts[1].get_content_type(),
                                 "message/delivery-status")
                self.assertIn(parts[2].get_content_type(),
                              ("message/rfc822", "text/rfc822-headers"))
                blocks = parts[1].get_payload()
                self.assertEqual(blocks[0]["Reporting-MTA"],
                                 "dns; mx.peregrine.test")
                self.assertEqual(blocks[0]["Original-Envelope-Id"],
                                 "QQ314159+x")
                got = [(b["Final-Recipient"].split(";", 1)[1].strip(),
                        b["Action"], b["Status"]) for b in blocks[1:]]
                self.assertEqual(got, EXPECTED[os.path.basename(path)])
                if parts[2].get_content_type() == "message/rfc822":
                    inner = parts[2].get_payload()[0]
                    self.assertEqual(inner["Subject"], "Your invoice 42")
                    # A boundary-like line in the body did not end the part.
                    self.assertIn("your invoice is attached",
                                  inner.get_payload())


if __name__ == "__main__":
    unittest.main()
