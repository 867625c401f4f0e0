#!/usr/bin/env python3
"""Bounces end to end: a destination refuses one recipient with 550 5.1.1;
the sender's domain (another local server, found through MX records)
receives a DSN naming that recipient, which Python's email package reads as
a valid multipart/report; the address is suppressed and a second message to
it is refused at RCPT; a 4xx that persists past max_age produces an expiry
DSN; the null sender and NOTIFY=NEVER get none; a delay DSN goes once."""
import email
import email.policy
import os
import smtplib
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, Nsd, RawSink, free_port, wait_until  # noqa


def parse(raw):
    """A DSN as it came over SMTP (dot-stuffed DATA with the end marker)."""
    body = raw[:-3] if raw.endswith(b".\r\n") else raw
    body = body.replace(b"\r\n..", b"\r\n.")
    return email.message_from_bytes(body, policy=email.policy.compat32)


def reports(msg):
    """[(recipient, action, status, diagnostic)] of a delivery-status part."""
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = status.get_payload()  # [per-message, per-recipient...]
    out = []
    for b in blocks[1:]:
        out.append((b["Final-Recipient"].split(";", 1)[1].strip(),
                    b["Action"], b["Status"], b.get("Diagnostic-Code", "")))
    return out


class DsnTest(unittest.TestCase):
    def setUp(self):
        port = free_port()
        self.dest = RawSink(host="127.0.0.1", port=port, refuse={
            "gone@dest.test":
                "550 5.1.1 <gone@dest.test>: Recipient address rejected: "
                "User unknown in local recipient table",
            "later@dest.test": "451 4.2.0 mailbox busy, try again",
        })
        self.src = RawSink(host="127.0.0.2", port=port)
        self.nsd = Nsd({
            "dest.test": ["@ IN MX 10 mx.dest.test.", "mx IN A 127.0.0.1"],
            "src.test": ["@ IN MX 10 mx.src.test.", "mx IN A 127.0.0.2"],
        })
        self.port = port
        self.d = None

    def tearDown(self):
        if self.d is not None and self.d.proc.poll() is None:
            self.d.stop()
        self.nsd.stop()
        self.dest.stop()
        self.src.stop()

    def start(self, extra="", max_age="4s"):
        self.d = Daemon(self.nsd.dns_config() +
                        f'[delivery]\nport = {self.port}\n'
                        'idle_timeout = "200ms"\nretry_first = "1s"\n'
                        f'retry_max = "1s"\nmax_age = "{max_age}"\n' + extra)
        return self.d

    def test_failure_dsn_suppression_and_refusal(self):
        d = self.start()
        with d.smtp() as s:
            s.sendmail("app@src.test", ["ok@dest.test", "gone@dest.test"],
                       "Subject: invoice 42\r\nMessage-ID: <m42@src.test>\r\n"
                       "\r\nHello.\r\n",
                       rcpt_options=["NOTIFY=FAILURE",
                                     "ORCPT=rfc822;gone+2Bx@dest.test"])
        self.assertTrue(wait_until(lambda: len(self.src.messages) >= 1),
                        "no DSN reached the sender's domain")
        sender, rcpts = self.src.envelopes[0]
        self.assertEqual(sender, "")  # From the null sender.
        self.assertEqual(rcpts, ["app@src.test"])
        msg = parse(self.src.messages[0])
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        rows = reports(msg)
        self.assertEqual(len(rows), 1, rows)
        rcpt, action, status, diag = rows[0]
        self.assertEqual((rcpt, action, status), ("gone@dest.test", "failed",
                                                  "5.1.1"))
        self.assertIn("User unknown", diag)
        block = msg.get_payload()[1].get_payload()[1]
        self.assertEqual(block["Original-Recipient"], "rfc822;gone+x@dest.test")
        returned = msg.get_payload()[2]
        self.assertEqual(returned.get_content_type(), "message/rfc822")
        self.assertEqual(returned.get_payload()[0]["Subject"], "invoice 42")
        self.assertIn("does not exist", msg.get_payload()[0].get_payload())

        # The address is now suppressed: refused at RCPT, with why.
        def log():
            with open(os.path.join(d.data, "daemon.log")) as f:
                return f.read()
        self.assertTrue(wait_until(lambda: "suppressed <gone@dest.test>" in
                                 log()))
        with d.smtp() as s:
            s.ehlo()
            s.mail("app@src.test")
            code, text = s.rcpt("gone@dest.test")
            self.assertEqual(code, 550, text)
            self.assertIn(b"suppressed", text)
            self.assertEqual(s.rcpt("ok2@dest.test")[0], 250)
        listed = d.cli("suppression", "list")
        self.assertIn("gone@dest.test", listed)
        self.assertEqual(d.stop(), 0)
        types = [e["type"] for e in d.events()]
        for t in ("failed", "bounce", "dsn_sent", "suppressed",
                  "suppression_hit"):
            self.assertIn(t, types)
        bounce = [e for e in d.events() if e["type"] == "bounce"]
        self.assertEqual(len(bounce), 1)
        self.assertEqual(bounce[0]["category"], "invalid_recipient")

    def test_expiry_dsn_and_no_dsn_cases(self):
        d = self.start()
        with d.smtp() as s:
            s.sendmail("app@src.test", ["later@dest.test"],
                       "Subject: s1\r\n\r\nx\r\n")
            # The null sender and NOTIFY=NEVER: never a DSN.
            s.sendmail("", ["gone@dest.test"], "Subject: s2\r\n\r\nx\r\n")
            s.sendmail("app@src.test", ["gone@dest.test"],
                       "Subject: s3\r\n\r\nx\r\n",
                       rcpt_options=["NOTIFY=NEVER"])
        self.assertTrue(wait_until(lambda: len(self.src.messages) >= 1, 40),
                        "no expiry DSN")
        time.sleep(2)
        self.assertEqual(len(self.src.messages), 1)
        rows = reports(parse(self.src.messages[0]))
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0][:2], ("later@dest.test", "failed"))
        self.assertTrue(rows[0][2].startswith("4."), rows)
        self.assertEqual(d.stop(), 0)

    def test_delay_dsn_once(self):
        d = self.start('[bounce]\ndelay_dsn_after = "2s"\n'
                       'delay_dsn_listeners = ["relay"]\n', max_age="8s")
        with d.smtp() as s:
            s.sendmail("app@src.test", ["later@dest.test"],
                       "Subject: s1\r\n\r\nx\r\n")
        self.assertTrue(wait_until(lambda: len(self.src.messages) >= 1, 20))
        rows = reports(parse(self.src.messages[0]))
        self.assertEqual(rows[0][:2], ("later@dest.test", "delayed"))
        returned = parse(self.src.messages[0]).get_payload()[2]
        self.assertEqual(returned.get_content_type(), "text/rfc822-headers")
        # Then the expiry: two notices in all, never a second delay one.
        self.assertTrue(wait_until(lambda: len(self.src.messages) >= 2, 30))
        time.sleep(1.5)
        actions = [reports(parse(m))[0][1] for m in self.src.messages]
        self.assertEqual(actions, ["delayed", "failed"])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
