#!/usr/bin/python3
"""Queue transfer: node A, whose smarthost is down, holds deferred mail
(some injected with a campaign tag and DSN parameters); `peregrine queue
transfer --to B --all` moves it to node B, which delivers every message
exactly once to its sink with the tags, the attempts so far and the DSN
parameters kept, while A's queue ends empty. A stranger's
X-Peregrine-Transfer field is believed only when well formed and is
always removed; a destination that is down stops the transfer with the
mail kept."""
import subprocess
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, Daemon, RawSink, admin_call,  # noqa: E402
                     free_port, wait_until)

COUNT = 60


def node(sink_port, admin_port, relay_networks=""):
    return Daemon(admin=f'"127.0.0.1:{admin_port}"', extra=f"""
[delivery]
[smarthost]
host = "127.0.0.1"
port = {sink_port}
tls = "none"
{relay_networks}
""")


class TransferTest(unittest.TestCase):
    def setUp(self):
        self.sink = RawSink()
        self.dead = free_port()  # Nothing listens: A's mail is deferred.
        self.a_admin, self.b_admin = free_port(), free_port()
        self.a = node(self.dead, self.a_admin)
        self.b = node(self.sink.port, self.b_admin)

    def tearDown(self):
        for d in (self.a, self.b):
            if d.proc.poll() is None:
                d.stop()
        self.sink.stop()

    def transfer(self, to, *selection):
        return subprocess.run(
            [PEREGRINE, "queue", "transfer", "--to", to, *selection,
             "--config", self.a.cfg, "--data-dir", self.a.data],
            capture_output=True, text=True, timeout=120)

    def deferred(self):
        return [e for e in self.a.events() if e["type"] == "deferred"]

    def test_moves_every_message_once_with_its_tags_and_attempts(self):
        status, answer = admin_call(self.a_admin, "POST", "/api/v1/inject", {
            "envelope_sender": "news@src.test",
            "campaign": "spring",
            "content": "Subject: {{ n }}\r\n\r\nhello {{ n }}\r\n",
            "recipients": [{"email": f"r{i}@example.test",
                            "substitutions": {"n": str(i)}}
                           for i in range(COUNT)]})
        self.assertEqual(status, 200, answer)
        with self.a.smtp() as s:
            s.ehlo()
            s.sendmail("dsn@src.test", ["dsn@example.test"],
                       "Subject: dsn\r\n\r\nbody\r\n",
                       mail_options=["RET=HDRS", "ENVID=env42"],
                       rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                     "ORCPT=rfc822;orig@example.test"])
        self.assertTrue(wait_until(
            lambda: len(self.deferred()) >= COUNT + 1, 30))
        r = self.transfer(f"127.0.0.1:{self.b.port}", "--all")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{COUNT + 1} recipients", r.stdout)
        self.assertEqual(self.sink.wait_for(COUNT + 1, 30), COUNT + 1)
        time.sleep(1)  # Anything twice would come now.
        self.assertEqual(len(self.sink.messages), COUNT + 1)
        rcpts = sorted(r for _, rs in self.sink.envelopes for r in rs)
        self.assertEqual(len(set(rcpts)), COUNT + 1)
        for m in self.sink.messages:
            self.assertNotIn(b"X-Peregrine-Transfer", m)
        # A: every recipient final (transferred), its queue empty.
        a_final = [e for e in self.a.events() if e["type"] == "delivered"]
        self.assertEqual(len(a_final), COUNT + 1)
        self.assertTrue(all("transferred" in e["reason"] for e in a_final))
        self.assertTrue(wait_until(
            lambda: "0 messages" in self.a.queue("list") or
            self.a.queue("list").strip() == "", 10), self.a.queue("list"))
        # B: the campaign, the attempts (one at A, then B's), the DSN
        # parameters.
        b_done = {e["recipient"]: e for e in self.b.events()
                  if e["type"] == "delivered"}
        self.assertEqual(len(b_done), COUNT + 1)
        self.assertEqual(b_done["r7@example.test"]["tags"].get("campaign"),
                         "spring")
        self.assertGreaterEqual(b_done["r7@example.test"]["attempt"], 2)
        b_received = [e for e in self.b.events() if e["type"] == "received"]
        self.assertEqual(len(b_received), COUNT + 1)
        mails = dict((rs[0], s) for s, rs in self.sink.envelopes)
        self.assertEqual(mails["dsn@example.test"], "dsn@src.test")

    def test_the_field_is_removed_and_believed_only_when_well_formed(self):
        # Loopback is a trusted network of B's relay listener (the
        # default): a well-formed field is honoured; a malformed one is
        # removed and ignored. Both leave the message.
        good = ("X-Peregrine-Transfer: v=1; attempts=3; campaign=moved\r\n"
                "Subject: good\r\n\r\nbody\r\n")
        bad = ("Subject: bad\r\nX-Peregrine-Transfer: v=2; attempts=x;\r\n"
               " campaign=forged\r\n\r\nbody\r\n")
        with self.b.smtp() as s:
            s.sendmail("x@src.test", ["good@example.test"], good)
            s.sendmail("x@src.test", ["bad@example.test"], bad)
        self.assertEqual(self.sink.wait_for(2, 20), 2)
        for m in self.sink.messages:
            self.assertNotIn(b"X-Peregrine-Transfer", m)
            self.assertNotIn(b"forged", m)
        self.assertTrue(wait_until(lambda: len(
            [e for e in self.b.events() if e["type"] == "delivered"]) == 2,
            10))
        done = {e["recipient"]: e for e in self.b.events()
                if e["type"] == "delivered"}
        self.assertEqual(done["good@example.test"]["tags"].get("campaign"),
                         "moved")
        self.assertEqual(done["good@example.test"]["attempt"], 4)
        self.assertIsNone(done["bad@example.test"]["tags"].get("campaign"))
        self.assertEqual(done["bad@example.test"]["attempt"], 1)

    def test_a_destination_that_is_down_keeps_the_mail(self):
        with self.a.smtp() as s:
            for i in range(5):
                s.sendmail("x@src.test", [f"k{i}@example.test"],
                           f"Subject: {i}\r\n\r\nbody\r\n")
        self.assertTrue(wait_until(lambda: len(self.deferred()) >= 5, 30))
        r = self.transfer(f"127.0.0.1:{free_port()}", "--all")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot connect", r.stderr)
        self.assertFalse(any(e["type"] == "delivered"
                             for e in self.a.events()))
        # Still there, and movable once B is up.
        r = self.transfer(f"127.0.0.1:{self.b.port}", "--all")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.sink.wait_for(5, 30), 5)


if __name__ == "__main__":
    unittest.main()
