#!/usr/bin/env python3
"""`peregrine send-test` against a running daemon whose destination answers
250, 451 or 550 by recipient: each run prints its steps and the outcome
with advice, exit 0 only when delivered; a wrong password is explained,
at submission and at a smarthost that refuses the daemon's login;
`queue show` gives the same advice."""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, TMP, Daemon, Nsd, RawSink,  # noqa: E402
                     add_user, free_port)


class SendTestTest(unittest.TestCase):
    def setUp(self):
        self.sink = RawSink(refuse={
            "later@slow.test": "451 4.7.1 greylisted, try again later",
            "nobody@dest.test": "550 5.1.1 no such user"})
        # slow.test is a site of its own: its greylisting (which pauses
        # that site) does not hold dest.test up.
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"],
                        "slow.test": ["@ IN MX 10 mx.slow.test.",
                                      "mx IN A 127.0.0.1"]})
        self.data = tempfile.mkdtemp(dir=TMP)
        add_user(self.data, "app", "correct-horse")
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n"
                        'retry_first = "1h"\n',
                        data=self.data, admin=f'"127.0.0.1:{free_port()}"')

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.nsd.stop()
        self.sink.stop()

    def send_test(self, *args, password=None):
        env = dict(os.environ)
        if password is not None:
            env["PEREGRINE_PASSWORD"] = password
        return subprocess.run(
            [PEREGRINE, "send-test", "-c", self.d.cfg, "--data-dir",
             self.d.data, "--timeout", "30", *args],
            capture_output=True, text=True, timeout=90, env=env)

    def test_delivered_deferred_and_failed(self):
        r = self.send_test("--to", "ok@dest.test")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("✓ connected to 127.0.0.1:", r.stdout)
        self.assertIn("✓ accepted: 250 2.0.0 Ok: queued as ", r.stdout)
        self.assertIn("✓ delivered to site dest.test", r.stdout)

        r = self.send_test("--to", "later@slow.test")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("✗ deferred (site slow.test)", r.stdout)
        self.assertIn("greylisted", r.stdout)
        self.assertIn("Peregrine retries by itself", r.stdout)
        queued = r.stdout.split("queued as ")[1][:16]
        show = subprocess.run(
            [PEREGRINE, "queue", "show", queued, "--data-dir", self.d.data],
            capture_output=True, text=True, timeout=30)
        self.assertIn("→ the receiver asks to come back later", show.stdout)

        r = self.send_test("--to", "nobody@dest.test")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("✗ failed (site dest.test): 550 5.1.1", r.stdout)
        self.assertIn("the address does not exist", r.stdout)

    def test_submission_as_a_user(self):
        r = self.send_test("--to", "ok@dest.test", "--user", "app",
                           password="wrong-password")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("✓ TLS TLSv1.3", r.stdout)
        self.assertIn("✗ authentication: 535", r.stdout)
        self.assertIn("app password", r.stdout)
        r = self.send_test("--to", "ok@dest.test", "--user", "app",
                           "--from", "app@src.test", password="correct-horse")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("✓ authenticated as app", r.stdout)
        self.assertIn("✓ delivered", r.stdout)

    def test_a_smarthost_refusing_the_login(self):
        # The smarthost: another Peregrine, whose submission port wants AUTH
        # after STARTTLS; ours logs in with the wrong password.
        relay_data = tempfile.mkdtemp(dir=TMP)
        add_user(relay_data, "relay", "right-password")
        relay = Daemon("", data=relay_data)
        try:
            data = tempfile.mkdtemp(dir=TMP)
            d = Daemon(f"""[delivery]
retry_first = "1h"
[smarthost]
host = "127.0.0.1"
port = {relay.submission}
tls = "starttls"
verify = false
user = "relay"
password = "wrong-password"
""", data=data, admin=f'"127.0.0.1:{free_port()}"')
            try:
                r = subprocess.run(
                    [PEREGRINE, "send-test", "-c", d.cfg, "--data-dir", data,
                     "--timeout", "30", "--to", "ok@dest.test"],
                    capture_output=True, text=True, timeout=90)
            finally:
                self.assertEqual(d.stop(), 0)
        finally:
            self.assertEqual(relay.stop(), 0)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("✓ accepted", r.stdout)
        self.assertIn("✗ deferred", r.stdout)
        self.assertIn("refused the login for user 'relay'", r.stdout)
        self.assertIn("wrong user name or password", r.stdout)
        self.assertIn("app password", r.stdout)

    def test_nothing_listening(self):
        r = self.send_test("--to", "ok@dest.test", "--server",
                           f"127.0.0.1:{free_port()}")
        self.assertEqual(r.returncode, 1)
        self.assertIn("✗ connect", r.stdout)
        self.assertIn("nothing listens there", r.stdout)
        r = self.send_test("--to", "not-an-address")
        self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main()
