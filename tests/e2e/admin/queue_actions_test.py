#!/usr/bin/env python3
"""Queue actions through the admin API of a running daemon delivering to
smtp-sink through NSD: bounce by campaign (held mail failed with DSNs, the
other campaign untouched), retry now, delete by id without a DSN, one
message's state, the summary by campaign and age, the CLI, and bad
selections answered 400."""
import subprocess
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, Daemon, Nsd, Sink, admin_call,  # noqa: E402
                     free_port, wait_until)


def call(port, method, path, payload=None):
    return admin_call(port, method, path, payload)


def inject(port, campaign, recipients):
    status, reply = call(port, "POST", "/api/v1/inject", {
        "envelope_sender": "news@bounces.test",
        "campaign": campaign,
        "content": {"from": {"email": "news@bounces.test"},
                    "subject": "Hi {{ name }}",
                    "text_body": "Hello {{ name }}\n"},
        "recipients": [{"email": r, "name": r.split("@")[0]}
                       for r in recipients],
    })
    assert status == 200 and reply["fail_count"] == 0, reply
    by_recipient = {i["recipient"]: i["id"] for i in reply["ids"]}
    return [by_recipient[r] for r in recipients]


def dsn_count(sink):
    n = 0
    for path in sink.messages():
        with open(path, "rb") as f:
            if b"multipart/report" in f.read():
                n += 1
    return n


class QueueActionsTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        # down.test's MX has nothing listening: every attempt is deferred.
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"],
                        "bounces.test": ["@ IN MX 10 mx.dest.test."],
                        "down.test": ["@ IN MX 10 mx.down.test.",
                                      "mx IN A 127.0.0.2"]})
        self.admin = free_port()
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n"
                        'retry_first = "1h"\nretry_max = "2h"\n',
                        admin=f'"127.0.0.1:{self.admin}"')

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.nsd.stop()
        self.sink.stop()

    def test_bounce_by_campaign_fails_that_campaign_alone_with_dsns(self):
        status, _ = call(self.admin, "POST", "/api/v1/queue/suspend",
                         {"domain": "dest.test"})
        self.assertEqual(status, 200)
        spring = inject(self.admin, "spring",
                        [f"s{i}@dest.test" for i in range(10)])
        inject(self.admin, "autumn", [f"a{i}@dest.test" for i in range(5)])
        time.sleep(0.5)  # Routed to the suspended site, held there.

        status, summary = call(self.admin, "GET", "/api/v1/queue/summary")
        self.assertEqual(status, 200)
        campaigns = {c["campaign"]: c["recipients"]
                     for c in summary["by_campaign"]}
        self.assertEqual(campaigns, {"spring": 10, "autumn": 5})
        # All of it new: the first age bucket, like qshape's.
        self.assertEqual(summary["age_minutes"]["0"], 15)
        self.assertEqual(summary["age_minutes"]["1280+"], 0)

        status, reply = call(self.admin, "POST", "/api/v1/queue/bounce",
                             {"campaign": "spring"})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["done"], 10, reply)
        self.assertEqual(reply["in_flight"], 0, reply)
        # One DSN per message to news@bounces.test, which is not suspended.
        self.assertTrue(wait_until(lambda: dsn_count(self.sink) == 10,
                                   timeout=30))
        self.assertEqual(len(self.sink.messages()), 10)
        with open(self.sink.messages()[0], "rb") as f:
            self.assertIn(b"bounced by the operator", f.read())
        status, m = call(self.admin, "GET",
                         f"/api/v1/queue/messages/{spring[0]}")
        self.assertEqual(status, 200, m)
        self.assertEqual(m["recipients"][0]["state"], "failed")
        self.assertEqual(m["campaign"], "spring")

        # The other campaign was held, and goes once resumed. (The DSNs
        # carry their message's campaign: the sink has them a moment before
        # the queue records them delivered, so wait for that.)
        def campaigns():
            status, summary = call(self.admin, "GET", "/api/v1/queue/summary")
            self.assertEqual(status, 200, summary)
            return {c["campaign"]: c["recipients"]
                    for c in summary["by_campaign"]}
        wait_until(lambda: campaigns() == {"autumn": 5}, timeout=30)
        self.assertEqual(campaigns(), {"autumn": 5})
        call(self.admin, "POST", "/api/v1/queue/resume",
             {"domain": "dest.test"})
        self.assertEqual(self.sink.wait_for(15, timeout=30), 15)

        self.assertEqual(self.d.stop(), 0)
        events = self.d.events()
        failed = [e for e in events if e["type"] == "failed"]
        self.assertEqual(len(failed), 10)
        self.assertTrue(all(e["tags"]["campaign"] == "spring" and
                            "operator" in e["reason"] for e in failed))
        admin = [e["reason"] for e in events if e["type"] == "admin"]
        self.assertIn("bounce campaign=spring: 10 recipients done, 0 in "
                      "flight", admin)

    def test_retry_now_and_delete_without_a_dsn(self):
        ids = inject(self.admin, "c", ["x@down.test", "y@down.test"])

        def attempts(i):
            status, m = call(self.admin, "GET", f"/api/v1/queue/messages/{i}")
            self.assertEqual(status, 200, m)
            return m["recipients"][0]["attempts"]

        wait_until(lambda: attempts(ids[0]) == 1 and attempts(ids[1]) == 1)
        # Deferred for an hour; retried now, it is tried again at once.
        status, reply = call(self.admin, "POST", "/api/v1/queue/retry",
                             {"domain": "down.test"})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["done"], 2)
        wait_until(lambda: attempts(ids[0]) == 2 and attempts(ids[1]) == 2)

        status, reply = call(self.admin, "POST", "/api/v1/queue/delete",
                             {"id": ids[0]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["done"], 1)
        status, m = call(self.admin, "GET", f"/api/v1/queue/messages/{ids[0]}")
        self.assertTrue(m["finished"])
        self.assertEqual(m["recipients"][0]["state"], "failed")
        # Bounced, the other gets its DSN; the deleted one never does.
        r = subprocess.run(
            [PEREGRINE, "queue", "bounce", "--id", ids[1], "--config",
             self.d.cfg, "--data-dir", self.d.data],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"bounce id={ids[1]}: 1 recipients", r.stdout)
        self.assertEqual(self.sink.wait_for(1, timeout=30), 1)
        time.sleep(1.5)
        self.assertEqual(len(self.sink.messages()), 1)
        with open(self.sink.messages()[0], "rb") as f:
            self.assertIn(b"y@down.test", f.read())

        self.assertEqual(self.d.stop(), 0)
        reasons = {e["recipient"]: e["reason"] for e in self.d.events()
                   if e["type"] == "failed"}
        self.assertIn("deleted", reasons["x@down.test"])
        self.assertIn("bounced", reasons["y@down.test"])

    def test_a_campaign_suspended_waits_unattempted_until_resumed(self):
        r = subprocess.run(
            [PEREGRINE, "queue", "suspend", "--campaign", "spring",
             "--reason", "wrong price", "--config", self.d.cfg,
             "--data-dir", self.d.data],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("suspended campaign spring", r.stdout)
        spring = inject(self.admin, "spring",
                        [f"s{i}@dest.test" for i in range(3)])
        inject(self.admin, "autumn", ["a0@dest.test", "a1@dest.test"])
        # The other campaign goes; the held one waits, never attempted.
        self.assertEqual(self.sink.wait_for(2), 2)
        time.sleep(1)
        self.assertEqual(len(self.sink.messages()), 2)
        status, m = call(self.admin, "GET",
                         f"/api/v1/queue/messages/{spring[0]}")
        self.assertEqual(m["recipients"][0]["attempts"], 0)
        self.assertIn(m["recipients"][0]["state"], ("queued", "deferred"))
        status, reply = call(self.admin, "GET", "/api/v1/queue/suspensions")
        self.assertEqual(reply["suspensions"][0]["campaign"], "spring")
        # Released, it goes at once (not at its next look a minute on).
        status, reply = call(self.admin, "POST", "/api/v1/queue/resume",
                             {"campaign": "spring"})
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.sink.wait_for(5, timeout=20), 5)
        self.assertEqual(self.d.stop(), 0)
        admin = [e["reason"] for e in self.d.events() if e["type"] == "admin"]
        self.assertIn("suspend campaign spring until resumed: wrong price",
                      admin)
        self.assertIn("resume campaign spring", admin)

    def test_one_message_suspended_by_id(self):
        inject(self.admin, "c", ["m0@dest.test", "m1@dest.test"])
        self.assertEqual(self.sink.wait_for(2), 2)
        status, reply = call(self.admin, "POST", "/api/v1/queue/suspend",
                             {"id": "00000000000000zz"})
        self.assertEqual(status, 400)
        # A message is named by its id once queued: its site is held while
        # the message is queued and then held by id.
        status, _ = call(self.admin, "POST", "/api/v1/queue/suspend",
                         {"domain": "dest.test"})
        held = inject(self.admin, "c", ["m2@dest.test"])[0]
        status, reply = call(self.admin, "POST", "/api/v1/queue/suspend",
                             {"id": held})
        self.assertEqual(status, 200, reply)
        call(self.admin, "POST", "/api/v1/queue/resume",
             {"domain": "dest.test"})
        time.sleep(1.5)
        self.assertEqual(len(self.sink.messages()), 2)  # Still held by id.
        status, m = call(self.admin, "GET", f"/api/v1/queue/messages/{held}")
        self.assertEqual(m["recipients"][0]["attempts"], 0)
        status, reply = call(self.admin, "POST", "/api/v1/queue/resume",
                             {"id": held})
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.sink.wait_for(3, timeout=20), 3)

    def test_cli_summary_and_bad_selections(self):
        inject(self.admin, "c", ["z@down.test"])
        r = subprocess.run(
            [PEREGRINE, "queue", "summary", "--config", self.d.cfg,
             "--data-dir", self.d.data],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("by campaign:", r.stdout)
        self.assertIn("recipients waiting, by age in minutes:", r.stdout)
        r = subprocess.run(
            [PEREGRINE, "queue", "bounce", "--config", self.d.cfg,
             "--data-dir", self.d.data],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 2)
        self.assertIn("name the mail", r.stderr)
        for payload in [b"nope", {}, {"campain": "c"}, {"id": "xyz"},
                        {"all": True, "site": "a"}]:
            status, reply = call(self.admin, "POST", "/api/v1/queue/delete",
                                 payload)
            self.assertEqual(status, 400, (payload, reply))
            self.assertTrue(reply["error"]["message"])
        status, _ = call(self.admin, "GET", "/api/v1/queue/messages/xyz")
        self.assertEqual(status, 400)
        status, _ = call(self.admin, "GET",
                         "/api/v1/queue/messages/00000000000000FF")
        self.assertEqual(status, 404)
        status, _ = call(self.admin, "GET", "/api/v1/queue/retry")
        self.assertEqual(status, 405)
        # Nothing was touched by the refused requests.
        status, summary = call(self.admin, "GET", "/api/v1/queue/summary")
        self.assertEqual(summary["by_state"]["deferred"] +
                         summary["by_state"]["queued"], 1)


if __name__ == "__main__":
    unittest.main()
