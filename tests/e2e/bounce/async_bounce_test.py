#!/usr/bin/env python3
"""Bounces that come back later, made by a real MTA: Peregrine sends with
VERP return paths to a Postfix that accepts, then fails to deliver and
bounces to the VERP address; Peregrine reads those DSNs (never relays
them), matches them by token, and suppresses the dead address. A forged
token and a bounce without one change nothing; a feedback-loop complaint
(ARF) suppresses its recipient. `peregrine bounce parse` reads Postfix's
and Exim's DSNs in LF, CRLF and CR forms."""
import hashlib
import hmac
import os
import re
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, Daemon, Exim, Nsd, Postfix,  # noqa: E402
                     RawSink, free_port, wait_until)


def token(secret, msg_id, index, rcpt):
    mac = hmac.new(secret.encode(), f"{msg_id}.{index}.{rcpt.lower()}".encode(),
                   hashlib.sha256).hexdigest()[:16]
    local, domain = rcpt.rsplit("@", 1)
    return f"bounces+{msg_id}.{index}.{mac}.{local}={domain}@bounces.test"


DSN = """From: MAILER-DAEMON@mx.elsewhere.test
To: whoever
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Gone.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.elsewhere.test

Final-Recipient: rfc822; ok@dest.test
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no such user

--b--
"""

ARF = """From: fbl@provider.test
To: fbl@bounces.test
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
\tboundary="arf"

--arf
Content-Type: text/plain

This is an email abuse report.

--arf
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ProviderFBL/1.0
Version: 1

--arf
Content-Type: message/rfc822

Return-Path: <{return_path}>
From: app@src.test
To: {rcpt}
Subject: spring sale
Message-ID: <sale-1@src.test>

Buy now.
--arf--
"""


class AsyncBounceTest(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.sink = RawSink(host="127.0.0.1", port=free_port(), refuse={
            "gone@dest.test": "550 5.1.1 <gone@dest.test>: Recipient address "
                              "rejected: User unknown in local recipient table",
            "full@dest.test": "552 5.2.2 <full@dest.test>: mailbox full",
        })
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.3"]})
        self.d = Daemon(self.nsd.dns_config() +
                        f'[delivery]\nport = {self.port}\n'
                        'idle_timeout = "200ms"\n'
                        '[bounce]\nverp_domain = "bounces.test"\n')
        self.postfix = Postfix("127.0.0.3", self.port,
                               f"[127.0.0.1]:{self.sink.port}",
                               {"bounces.test": f"[127.0.0.1]:{self.d.port}"})

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.d.stop()
        self.postfix.stop()
        self.nsd.stop()
        self.sink.stop()

    def log(self):
        with open(os.path.join(self.d.data, "daemon.log"),
                  errors="replace") as f:
            return f.read()

    def rcpt(self, address):
        with self.d.smtp() as s:
            s.ehlo()
            s.mail("app@src.test")
            return s.rcpt(address)[0]

    def test_postfix_bounces_are_matched_and_suppress(self):
        with self.d.smtp() as s:
            s.sendmail("app@src.test",
                       ["gone@dest.test", "full@dest.test", "ok@dest.test"],
                       "Subject: hello\r\nMessage-ID: <h1@src.test>\r\n\r\n"
                       "hi\r\n")
        # Postfix accepted, failed onward, and bounced to the VERP paths.
        self.assertTrue(wait_until(
            lambda: self.log().count("bounce from 127.0.0.1 read") >= 2),
            self.log()[-3000:] + self.postfix.maillog()[-3000:])
        self.assertTrue(wait_until(lambda: "suppressed <gone@dest.test>" in
                                 self.log()))
        self.assertEqual(self.rcpt("gone@dest.test"), 550)
        # mailbox_full is not a dead address: not suppressed.
        self.assertEqual(self.rcpt("full@dest.test"), 250)
        # The sink got ok@ from Postfix, and no bounce went anywhere else.
        self.assertEqual([r for _, r in self.sink.envelopes],
                         [["ok@dest.test"]])

        with open(os.path.join(self.d.data, "verp.secret")) as f:
            secret = f.read().strip()
        msg_id = re.search(r"received id=(\w+)", self.log()).group(1)
        # A forged token (wrong key) and a bounce with none: nothing changes.
        dsn = DSN
        forged = token("not-the-key-" * 3, msg_id, 0, "ok@dest.test")
        unsigned = "postmaster@bounces.test"
        for to in (forged, unsigned):
            with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10) as s:
                s.sendmail("", [to], dsn.replace("\n", "\r\n").encode())
        # A complaint for ok@ through the return path of the original.
        with smtplib.SMTP("127.0.0.1", self.d.port, timeout=10) as s:
            code, _ = s.ehlo()
            s.sendmail("fbl@provider.test", ["fbl@bounces.test"], ARF.format(
                return_path=token(secret, msg_id, 2, "ok@dest.test"),
                rcpt="ok@dest.test").replace("\n", "\r\n").encode())
        self.assertTrue(wait_until(lambda: "complaint to=<ok@dest.test>" in
                                 self.log()))
        self.assertEqual(self.rcpt("ok@dest.test"), 550)
        self.assertEqual(self.d.stop(), 0)
        events = self.d.events()
        asyncs = [e for e in events if e["type"] == "async_bounce"]
        by = {(e["recipient"], "matched by VERP" in e["reason"]) for e in asyncs}
        self.assertIn(("gone@dest.test", True), by)
        self.assertIn(("full@dest.test", True), by)
        self.assertNotIn(("ok@dest.test", True), by)
        forged_ev = [e for e in asyncs if "forged" in e["reason"]]
        self.assertEqual(len(forged_ev), 1, asyncs)
        gone = [e for e in asyncs if e["recipient"] == "gone@dest.test"][0]
        self.assertEqual(gone["category"], "invalid_recipient")
        self.assertEqual(gone["enhanced"], "5.1.1")
        suppressed = sorted(e["recipient"] for e in events
                            if e["type"] == "suppressed")
        self.assertEqual(suppressed, ["gone@dest.test", "ok@dest.test"])
        self.assertEqual(len([e for e in events if e["type"] == "complaint"]),
                         1)


REPLIES = [
    "550 5.1.1 <u0@dest.test>: Recipient address rejected: User unknown",
    "552 5.2.2 mailbox full",
    "550 5.7.1 Message rejected as spam by Content Filtering",
    "550 5.7.26 Unauthenticated email from src.test is not accepted due to "
    "domain's DMARC policy",
    "554 5.7.1 Service unavailable; Client host [127.0.0.3] blocked using "
    "zen.spamhaus.org",
    "550 5.2.1 The email account that you tried to reach is disabled",
]
EXPECTED = [("5.1.1", "invalid_recipient"), ("5.2.2", "mailbox_full"),
            ("5.7.1", "spam_block"), ("5.7.26", "auth_failure"),
            ("5.7.1", "ip_reputation"), ("5.2.1", "inactive_mailbox")]


class RealMtaDsnParseTest(unittest.TestCase):
    """Real DSNs from Postfix and Exim, captured at a sink, read by
    `peregrine bounce parse` with LF, CRLF and CR line ends."""

    def run_mta(self, start):
        catch = RawSink(host="127.0.0.1", port=free_port())
        refuse = RawSink(host="127.0.0.1", port=free_port(), refuse={
            f"u{i}@dest.test": reply for i, reply in enumerate(REPLIES)})
        mta, host, port = start(catch.port, refuse.port)
        try:
            with smtplib.SMTP(host, port, timeout=10) as s:
                for i in range(len(REPLIES)):
                    s.sendmail(f"app{i}@src.test", [f"u{i}@dest.test"],
                               f"Subject: t{i}\r\n\r\nx\r\n")
            self.assertTrue(
                wait_until(lambda: len(catch.messages) >= len(REPLIES)))
            import json
            seen = set()
            for raw in catch.messages:
                raw = raw[:-3].replace(b"\r\n..", b"\r\n.")
                for form in (raw, raw.replace(b"\r\n", b"\n"),
                             raw.replace(b"\r\n", b"\r")):
                    r = subprocess.run([PEREGRINE, "bounce", "parse", "-"],
                                       input=form, capture_output=True,
                                       timeout=30)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    j = json.loads(r.stdout)
                    self.assertEqual(j["kind"], "dsn")
                    self.assertEqual(len(j["recipients"]), 1, j)
                    rc = j["recipients"][0]
                    i = int(rc["recipient"][1:rc["recipient"].index("@")])
                    self.assertEqual(rc["action"], "failed")
                    self.assertEqual((rc["status"], rc["category"]),
                                     EXPECTED[i], rc)
                    self.assertEqual(rc["remote_mta"], "127.0.0.1")
                    seen.add(i)
            self.assertEqual(seen, set(range(len(REPLIES))))
        finally:
            mta.stop()
            catch.stop()
            refuse.stop()

    def test_postfix(self):
        def start(catch, refuse):
            port = free_port()
            return (Postfix("127.0.0.3", port, f"[127.0.0.1]:{refuse}",
                            {"src.test": f"[127.0.0.1]:{catch}"}),
                    "127.0.0.3", port)
        self.run_mta(start)

    def test_exim(self):
        def start(catch, refuse):
            port = free_port()
            return (Exim(port, {"dest.test": refuse}, catch),
                    "127.0.0.1", port)
        self.run_mta(start)


if __name__ == "__main__":
    unittest.main()
