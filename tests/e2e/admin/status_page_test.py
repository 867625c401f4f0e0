#!/usr/bin/env python3
"""The live status page at / of a running daemon, loaded in headless
Chromium (Debian's): the rendered DOM shows the queue and the totals the
daemon has, on a phone-sized window; a screenshot is kept with the test's
outputs."""
import os
import re
import smtplib
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon, free_port  # noqa: E402


def chromium(url, *args):
    profile = tempfile.mkdtemp(dir=TMP)
    env = dict(os.environ, HOME=profile)
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=412,915",
         "--virtual-time-budget=6000", *args, url],
        capture_output=True, text=True, timeout=120, env=env)


class StatusPageTest(unittest.TestCase):
    def test_the_page_renders_the_daemons_numbers(self):
        admin = free_port()
        d = Daemon(admin=f'"127.0.0.1:{admin}"')
        try:
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
                for i in range(3):
                    s.sendmail("a@src.test", [f"b{i}@dest.test"],
                               "Subject: x\r\n\r\nbody\r\n")
            url = f"http://127.0.0.1:{admin}/"
            r = chromium(url, "--dump-dom")
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            dom = r.stdout
            self.assertIn('data-ready="1"', dom, dom[-3000:])
            self.assertRegex(dom, r'id="queue-messages"[^>]*>3<')
            self.assertRegex(dom, r'id="total-received"[^>]*>3<')
            self.assertRegex(dom, r'id="queue-state"[^>]*>taking mail<')
            self.assertIsNotNone(re.search(r"peregrine \S+ · up", dom))
            out = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR") or TMP
            shot = os.path.join(out, "status_page.png")
            r = chromium(url, f"--screenshot={shot}")
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            self.assertGreater(os.path.getsize(shot), 5000)
            print(f"screenshot: {shot}")
        finally:
            self.assertEqual(d.stop(), 0)

    def test_off_loopback_the_page_takes_its_token_from_the_fragment(self):
        admin = free_port()
        token = "5a7e" * 8
        data = tempfile.mkdtemp(dir=TMP)
        with open(os.path.join(data, "tokens"), "w") as f:
            f.write(token + "\n")
        d = Daemon(admin=f'"0.0.0.0:{admin}"', data=data,
                   extra='[admin]\ntokens_file = "tokens"\n')
        try:
            r = chromium(f"http://127.0.0.1:{admin}/", "--dump-dom")
            self.assertEqual(r.returncode, 0, r.stderr[-2000:])
            self.assertIn("needs a token", r.stdout)
            self.assertNotIn('data-ready="1"', r.stdout)
            r = chromium(f"http://127.0.0.1:{admin}/#token={token}",
                         "--dump-dom")
            self.assertIn('data-ready="1"', r.stdout, r.stdout[-3000:])
        finally:
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
