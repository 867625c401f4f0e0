#!/usr/bin/env python3
"""`peregrine suppression` beside a running daemon and on a stopped one:
add, list, export, import (with a bad line), remove; what is listed is
refused at RCPT with the reason, and stops being refused once removed."""
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon  # noqa: E402


def rcpt(d, address):
    with d.smtp() as s:
        s.ehlo()
        s.mail("app@src.test")
        return s.rcpt(address)


class SuppressionCliTest(unittest.TestCase):
    def test_while_running_and_stopped(self):
        d = Daemon('[delivery]\nenabled = false\n')
        try:
            out = d.cli("suppression", "add", "Gone@Dest.Test",
                        "--reason", "asked to be removed")
            self.assertIn("added 1", out)
            code, text = rcpt(d, "gone@dest.test")
            self.assertEqual(code, 550)
            self.assertIn(b"asked to be removed", text)
            self.assertEqual(rcpt(d, "other@dest.test")[0], 250)

            with tempfile.NamedTemporaryFile("w", dir=TMP, suffix=".csv",
                                             delete=False) as f:
                f.write("address,scope,category\n"
                        "a@dest.test\n"
                        "b@dest.test,campaign:spring,complaint\n"
                        "not an address\n")
            r = d.cli("suppression", "import", f.name, check=False)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("added 2, removed 0, refused 1", r.stdout)
            self.assertIn("line 4", r.stdout)
            self.assertEqual(rcpt(d, "a@dest.test")[0], 550)
            # A campaign's entry does not stop other mail at RCPT.
            self.assertEqual(rcpt(d, "b@dest.test")[0], 250)

            csv = d.cli("suppression", "export")
            lines = csv.strip().splitlines()
            self.assertEqual(lines[0],
                             "address,scope,category,reason,source,added,"
                             "expires")
            self.assertEqual(len(lines), 4, csv)
            self.assertIn("b@dest.test,campaign:spring,complaint", csv)
            listed = d.cli("suppression", "list")
            self.assertIn("Gone@Dest.Test  global  manual", listed)

            r = d.cli("suppression", "remove", "gone@dest.test", check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(rcpt(d, "gone@dest.test")[0], 250)
            r = d.cli("suppression", "remove", "gone@dest.test", check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("not on the list", r.stdout)
            r = d.cli("suppression", "add", "x@y.test", "--scope", "team:x",
                      check=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn("tenant:NAME", r.stderr)
        finally:
            self.assertEqual(d.stop(), 0)

        # Stopped: the CLI changes the queue itself.
        self.assertIn("added 1", d.cli("suppression", "add", "c@dest.test"))
        d.start()
        try:
            self.assertEqual(rcpt(d, "c@dest.test")[0], 550)
            self.assertEqual(rcpt(d, "a@dest.test")[0], 550)
        finally:
            self.assertEqual(d.stop(), 0)
        hits = [e for e in d.events() if e["type"] == "suppression_hit"]
        self.assertGreaterEqual(len(hits), 4)


if __name__ == "__main__":
    unittest.main()
