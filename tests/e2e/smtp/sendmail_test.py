#!/usr/bin/env python3
"""`peregrine sendmail` and the `sendmail` link, as cron and PHP's mail()
call them, against a running daemon delivering to smtp-sink through NSD:
`-t` takes the recipients from the header and drops Bcc, `-f` sets the
envelope sender, a lone "." line ends the input without -i; with the
daemon down the exit code is 75 (EX_TEMPFAIL) with a clear message; a flag
it does not take is 64."""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, Daemon, Nsd, Sink  # noqa: E402


class SendmailTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"]})
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n")

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.nsd.stop()
        self.sink.stop()

    def sendmail(self, args, message, binary=PEREGRINE, sub=("sendmail",)):
        return subprocess.run(
            [binary, *sub, "-C", self.d.cfg, *args], input=message,
            capture_output=True, text=True, timeout=60)

    def dumps(self):
        out = []
        for path in self.sink.messages():
            with open(path, encoding="utf-8", errors="replace") as f:
                out.append(f.read())
        return out

    def test_dash_t_reaches_the_sink_without_bcc(self):
        r = self.sendmail(
            ["-t", "-oi", "-f", "cron@src.test"],
            "To: Ann <ann@dest.test>\nBcc: hidden@dest.test\n"
            "Subject: nightly backup\n\nall went well\n.\nstill here\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        # One transaction for both recipients (one domain).
        self.assertEqual(self.sink.wait_for(1), 1)
        dump = self.dumps()[0]
        self.assertIn("hidden@dest.test", dump)  # In the envelope only:
        self.assertNotIn("Bcc:", dump)
        self.assertIn("ann@dest.test", dump)
        self.assertIn("Subject: nightly backup", dump)
        self.assertIn("still here", dump)  # -oi: "." does not end it.
        self.assertIn("Message-ID: <", dump)
        self.assertIn("From: cron@src.test", dump)

    def test_the_sendmail_link_and_recipients_as_arguments(self):
        link = os.path.join(tempfile.mkdtemp(dir=TMP), "sendmail")
        os.symlink(os.path.abspath(PEREGRINE), link)
        r = self.sendmail(["-F", "Cron Daemon", "root@dest.test"],
                          "Subject: hi\n\nbody\n.\nnot sent\n",
                          binary=link, sub=())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.sink.wait_for(1), 1)
        dump = self.dumps()[0]
        self.assertIn('From: "Cron Daemon" <', dump)
        self.assertNotIn("not sent", dump)  # Without -i a lone "." ends it.

    def test_the_configuration_from_the_environment(self):
        # Cron names no -C: PEREGRINE_CONFIG (else /etc/peregrine's) says
        # where the relay listens.
        r = subprocess.run(
            [PEREGRINE, "sendmail", "-t"],
            input="To: env@dest.test\nSubject: env\n\nbody\n",
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PEREGRINE_CONFIG=self.d.cfg))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.sink.wait_for(1), 1)
        r = subprocess.run(
            [PEREGRINE, "sendmail", "-t"], input="To: x@dest.test\n\nb\n",
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PEREGRINE_CONFIG="/nonexistent.toml"))
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("PEREGRINE_CONFIG", r.stderr)

    def test_daemon_down_is_a_temporary_failure(self):
        self.assertEqual(self.d.stop(), 0)
        r = self.sendmail(["x@dest.test"], "Subject: x\n\nbody\n")
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("the daemon is not running", r.stderr)
        r = self.sendmail(["-Z", "x@dest.test"], "")
        self.assertEqual(r.returncode, 64)
        self.assertIn("unknown flag -Z", r.stderr)
        r = self.sendmail([], "Subject: x\n\nbody\n")
        self.assertEqual(r.returncode, 65)
        self.assertIn("no recipients", r.stderr)


if __name__ == "__main__":
    unittest.main()
