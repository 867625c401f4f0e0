#!/usr/bin/env python3
"""Queue control through the admin API of a running daemon delivering to
smtp-sink through NSD: a domain suspended keeps its mail queued without
using up attempts, survives a restart, and goes at once when resumed; a
suspension with a duration ends by itself; bad requests are 400/404."""
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, Daemon, Nsd, Sink, admin_call,  # noqa: E402
                     free_port)


def call(port, method, path, payload=None):
    return admin_call(port, method, path, payload)


def send(d, rcpt):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        s.sendmail("a@src.test", [rcpt], "Subject: x\r\n\r\nbody\r\n")


class QueueControlTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"],
                        "other.test": ["@ IN MX 10 mx.dest.test."]})
        self.admin = free_port()
        self.d = self.start()

    def start(self, data=None):
        return Daemon(self.nsd.dns_config() +
                      f"[delivery]\nport = {self.sink.port}\n"
                      'retry_first = "1s"\nretry_max = "2s"\n',
                      data=data, admin=f'"127.0.0.1:{self.admin}"')

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.nsd.stop()
        self.sink.stop()

    def test_suspend_survives_a_restart_and_resume_releases_at_once(self):
        status, reply = call(self.admin, "POST", "/api/v1/queue/suspend",
                             {"domain": "dest.test",
                              "reason": "throttling us"})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["suspended"]["domain"], "dest.test")
        send(self.d, "held@dest.test")
        send(self.d, "goes@other.test")
        # Another domain still goes; the suspended one is held, unattempted.
        self.assertEqual(self.sink.wait_for(1), 1)
        time.sleep(1.5)
        self.assertEqual(len(self.sink.messages()), 1)
        self.assertIn("<held@dest.test>  attempts=0", self.d.queue("list"))
        status, reply = call(self.admin, "GET", "/api/v1/queue/suspensions")
        self.assertEqual(status, 200)
        self.assertEqual([s["domain"] for s in reply["suspensions"]],
                         ["dest.test"])
        self.assertEqual(reply["suspensions"][0]["reason"], "throttling us")

        # A restart keeps it.
        self.assertEqual(self.d.stop(), 0)
        self.d = self.start(data=self.d.data)
        time.sleep(1.5)
        self.assertEqual(len(self.sink.messages()), 1)

        status, reply = call(self.admin, "POST", "/api/v1/queue/resume",
                             {"domain": "dest.test"})
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.sink.wait_for(2, timeout=10), 2)
        status, _ = call(self.admin, "POST", "/api/v1/queue/resume",
                         {"domain": "dest.test"})
        self.assertEqual(status, 404)
        # Every action is an event, with who asked.
        self.assertEqual(self.d.stop(), 0)
        admin = [e for e in self.d.events() if e["type"] == "admin"]
        reasons = [e["reason"] for e in admin]
        self.assertIn("suspend dest.test until resumed: throttling us",
                      reasons)
        self.assertIn("resume dest.test", reasons)
        self.assertTrue(all(e["client"] == "127.0.0.1" and
                            e["site"] == "dest.test" for e in admin), admin)

    def test_a_suspension_with_a_duration_ends_by_itself(self):
        status, reply = call(self.admin, "POST", "/api/v1/queue/suspend",
                             {"mx_suffix": ".dest.test", "duration": "2s"})
        self.assertEqual(status, 200, reply)
        self.assertTrue(reply["suspended"]["until"])
        send(self.d, "later@dest.test")
        time.sleep(1)
        self.assertEqual(len(self.sink.messages()), 0)
        self.assertEqual(self.sink.wait_for(1, timeout=15), 1)
        status, reply = call(self.admin, "GET", "/api/v1/queue/suspensions")
        self.assertEqual(reply["suspensions"], [])

    def cli(self, *args):
        return subprocess.run(
            [PEREGRINE, "queue", *args, "--config", self.d.cfg, "--data-dir",
             self.d.data], capture_output=True, text=True, timeout=30)

    def test_the_cli_calls_the_running_daemon(self):
        r = self.cli("suspend", "--domain", "dest.test", "--duration", "1h",
                     "--reason", "maintenance")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("suspended dest.test until ", r.stdout)
        r = self.cli("suspensions")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("dest.test", r.stdout)
        self.assertIn("maintenance", r.stdout)
        send(self.d, "x@dest.test")
        time.sleep(1)
        self.assertEqual(len(self.sink.messages()), 0)
        r = self.cli("resume", "--domain", "dest.test")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.sink.wait_for(1, timeout=10), 1)
        r = self.cli("resume", "--domain", "dest.test")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such suspension", r.stderr)
        r = self.cli("suspend")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--domain", r.stderr)
        self.assertEqual(self.d.stop(), 0)
        r = self.cli("suspend", "--domain", "dest.test")
        self.assertEqual(r.returncode, 1)
        self.assertIn("the daemon is not running", r.stderr)

    def test_bad_requests(self):
        for payload, code in [
            (b"nope", 400),
            ({}, 400),
            ({"domain": "a.test", "mx_suffix": ".b.test"}, 400),
            ({"domain": "not a domain"}, 400),
            ({"domain": "a.test", "duration": "-5m"}, 400),
            ({"domain": "a.test", "duration": "soon"}, 400),
        ]:
            status, reply = call(self.admin, "POST", "/api/v1/queue/suspend",
                                 payload)
            self.assertEqual(status, code, (payload, reply))
            self.assertTrue(reply["error"]["message"])
        status, _ = call(self.admin, "GET", "/api/v1/queue/suspend")
        self.assertEqual(status, 405)


if __name__ == "__main__":
    unittest.main()
