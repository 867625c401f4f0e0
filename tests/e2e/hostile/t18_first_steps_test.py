#!/usr/bin/python3
"""Defect 18, first steps: `peregrine help` and an unknown command said "A
subcommand is required"; a host name that is not fully qualified got no
warning; an empty data directory took 257 MB at first start (the spool's
256 MiB reserve). Now help helps, the warning names the setting, and the
reserve waits for the first mail."""
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, PEREGRINE, TMP  # noqa: E402


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            total += st.st_blocks * 512
    return total


class FirstStepsTest(unittest.TestCase):
    def test_help_and_unknown_commands(self):
        r = subprocess.run([PEREGRINE, "help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn("serve", r.stdout)
        r = subprocess.run([PEREGRINE, "sned"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'sned'", r.stderr)
        self.assertNotIn("A subcommand is required", r.stderr)

    def test_first_start_is_small_and_warns_about_a_short_host_name(self):
        data = tempfile.mkdtemp(dir=TMP)
        # "[queue]" keeps the default reserve (the library turns it off).
        d = Daemon("[queue]\n", data=data, server='hostname = "vm"')
        try:
            deadline = time.time() + 10
            log = ""
            while "started:" not in log and time.time() < deadline:
                time.sleep(0.05)
                with open(d.log.name) as f:
                    log = f.read()
            self.assertIn("'vm' is not a fully qualified domain name", log)
            self.assertIn("is written once mail has come in", log)
            self.assertLess(du(data), 64 << 20, f"{du(data) >> 20} MiB")
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
