#!/usr/bin/python3
"""Own domains end to end: a client that is neither trusted nor
authenticated sends to anything@own.test, the catch-all forwards it to an
outside mailbox (a RawSink, through [smarthost]) with an SRS return path
and a DKIM signature of own.test that dkimpy verifies; a bounce to that
SRS address goes back to the original sender, a forged one is refused; an
unknown user of a domain without a catch-all is refused at RCPT with
550 5.1.1; relaying anywhere else is still refused; a message that went
round 50 times (a forwarding loop) is refused with 5.4.6; an alias added with
`peregrine alias add` while the daemon runs takes effect within seconds; a
broken aliases file keeps the daemon from starting, naming its line."""
import json
import os
import re
import smtplib
import subprocess
import sys
import unittest

import dkim

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, TMP, Daemon, RawSink,  # noqa: E402
                     admin_call, free_port, smarthost_to, wait_until)


def peregrine(*args, check=True):
    r = subprocess.run([PEREGRINE, *args], capture_output=True, text=True,
                       timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"peregrine {args}: {r.stderr}")
    return r


class LocalDomainsTest(unittest.TestCase):
    def setUp(self):
        self.sink = RawSink()
        self.data = os.path.join(TMP, f"local-{self.id().split('.')[-1]}")
        subprocess.run(["rm", "-rf", self.data], check=True)
        os.makedirs(self.data)
        key = os.path.join(self.data, "own.key")
        out = peregrine("dkim", "keygen", "--domain", "own.test",
                        "--selector", "s1", "--out", key).stdout
        value = re.search(r"^  Value: (.*)$", out, re.M).group(1)
        self.record = "".join(re.findall(r'"([^"]*)"', value)).encode()
        # 127.0.0.1 is not trusted: it is the internet here.
        self.extra = (
            '[relay]\ntrusted_networks = ["10.255.255.0/24"]\n'
            '[local]\ndomains = ["own.test", "two.test"]\n'
            f'[[dkim.keys]]\ndomain = "own.test"\nselector = "s1"\n'
            f'key_file = "{key}"\n' + smarthost_to(self.sink.port))
        self.cfg = os.path.join(self.data, "peregrine.toml")
        with open(self.cfg, "w") as f:
            f.write('[local]\ndomains = ["own.test", "two.test"]\n')
        # Aliases made before the first start, as a new user would.
        self.alias("add", "*@own.test", "me@outside.test")
        self.alias("add", "known@two.test", "known@outside.test")
        self.d = None

    def alias(self, *args, check=True):
        return peregrine("alias", *args, "-c", self.cfg, "--data-dir",
                         self.data, check=check)

    def start(self):
        self.d = Daemon(self.extra, data=self.data)

    def tearDown(self):
        if self.d is not None and self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.sink.stop()

    def smtp(self):
        s = smtplib.SMTP("127.0.0.1", self.d.port, timeout=30)
        s.ehlo("client.example")
        return s

    def test_catch_all_forwards_with_srs_and_dkim(self):
        self.start()
        with self.smtp() as s:
            s.sendmail("carol@sender.example", ["anything+tag@own.test"],
                       "From: Carol <carol@sender.example>\r\n"
                       "To: anything+tag@own.test\r\nSubject: hi\r\n\r\n"
                       "forward me\r\n")
        self.assertEqual(self.sink.wait_for(1), 1)
        sender, rcpts = self.sink.envelopes[0]
        self.assertEqual(rcpts, ["me@outside.test"])
        self.assertRegex(sender,
                         r"^SRS0=[^=]{4}=[A-Z2-7]{2}=sender\.example="
                         r"carol@own\.test$")
        raw = self.sink.messages[0]
        message = raw[:raw.rindex(b"\r\n.\r\n") + 2]
        self.assertIn(b"d=own.test", message)
        self.assertTrue(dkim.verify(
            message, dnsfunc=lambda name, timeout=5: self.record),
            message.decode(errors="replace"))

        # A bounce of it, to the SRS address, goes back to carol.
        with self.smtp() as s:
            s.sendmail("", [sender], "Subject: Undelivered\r\n\r\nsorry\r\n")
        self.assertEqual(self.sink.wait_for(2), 2)
        self.assertEqual(self.sink.envelopes[1], ("", ["carol@sender.example"]))
        # A forged SRS address is refused: no relaying through it.
        forged = re.sub(r"^SRS0=[^=]{4}=", "SRS0=AAAA=", sender)
        if forged == sender:
            forged = re.sub(r"^SRS0=[^=]{4}=", "SRS0=BBBB=", sender)
        with self.smtp() as s:
            s.mail("")
            code, reply = s.rcpt(forged)
            self.assertEqual(code, 550, reply)
            self.assertIn(b"5.1.1", reply)

    def test_unknown_users_and_other_domains_are_refused_at_rcpt(self):
        self.start()
        with self.smtp() as s:
            s.mail("carol@sender.example")
            code, reply = s.rcpt("stranger@two.test")
            self.assertEqual(code, 550, reply)
            self.assertIn(b"5.1.1", reply)
            self.assertIn(b"User unknown", reply)
            code, reply = s.rcpt("someone@else.example")
            self.assertEqual(code, 554, reply)
            self.assertIn(b"Relay access denied", reply)
            code, reply = s.rcpt("Known@two.test")
            self.assertEqual(code, 250, reply)
            code, reply = s.data("Subject: x\r\n\r\nfor known\r\n")
            self.assertEqual(code, 250, reply)
        self.assertEqual(self.sink.wait_for(1), 1)
        sender, rcpts = self.sink.envelopes[0]
        self.assertEqual(rcpts, ["known@outside.test"])
        self.assertTrue(sender.startswith("SRS0="), sender)

    def test_a_mail_loop_ends_at_50_hops(self):
        # An alias forwarding to a mailbox that forwards back: each pass adds
        # a Received field, and at 50 the message is refused (5.4.6).
        self.start()
        hops = "".join(f"Received: from hop{i}.example by x; "
                       "Sat, 28 Nov 2026 00:00:00 +0000\r\n"
                       for i in range(50))
        with self.smtp() as s:
            s.mail("carol@sender.example")
            s.rcpt("anyone@own.test")
            code, reply = s.data(hops + "Subject: loop\r\n\r\nround\r\n")
            self.assertEqual(code, 554, reply)
            self.assertIn(b"5.4.6", reply)
            # One hop fewer still goes.
            s.mail("carol@sender.example")
            s.rcpt("anyone@own.test")
            code, reply = s.data(hops[hops.index("\r\n") + 2:] +
                                 "Subject: not yet\r\n\r\nround\r\n")
            self.assertEqual(code, 250, reply)

    def test_http_injection_refuses_unknown_local_users(self):
        port = free_port()
        self.d = Daemon(self.extra, data=self.data, admin=f'"127.0.0.1:{port}"')
        status, answer = admin_call(port, "POST", "/api/v1/inject", {
            "envelope_sender": "app@sender.example",
            "content": "Subject: hi\r\n\r\nbody\r\n",
            "recipients": [{"email": "stranger@two.test"},
                           {"email": "known@two.test"}]})
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["success_count"], 1, answer)
        self.assertEqual(answer["failed_recipients"], ["stranger@two.test"])
        self.assertIn("550 5.1.1", json.dumps(answer["errors"]))

    def test_alias_added_while_running_takes_effect(self):
        self.start()
        r = self.alias("add", "late@two.test", "late@outside.test")
        self.assertIn("late@two.test → late@outside.test", r.stdout)

        def accepted():
            with self.smtp() as s:
                s.mail("carol@sender.example")
                return s.rcpt("late@two.test")[0] == 250
        self.assertTrue(wait_until(accepted, timeout=10))
        r = self.alias("resolve", "nobody@two.test", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no alias takes nobody@two.test", r.stderr)
        # A pipe target is refused by the command, the file stays as it was.
        r = self.alias("add", "x@two.test", "|/bin/sh", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("forwards only", r.stderr)

    def test_a_broken_aliases_file_stops_the_start_naming_its_line(self):
        with open(os.path.join(self.data, "aliases", "two.test"), "a") as f:
            f.write("backup: | /usr/local/bin/store\n")
        with self.assertRaises(AssertionError):
            Daemon(self.extra, data=self.data)
        with open(os.path.join(self.data, "daemon.log")) as f:
            log = f.read()
        self.assertIn("aliases/two.test:4:", log)  # After 2 comments, known.
        self.assertIn("forwards only", log)

if __name__ == "__main__":
    unittest.main()
