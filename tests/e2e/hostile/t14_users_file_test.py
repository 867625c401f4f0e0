#!/usr/bin/python3
"""Defect 14: a user added with `peregrine user add` was refused (535)
until the daemon got SIGHUP. Now the daemon notices the changed file by
itself; `user add` says where it wrote."""
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, PEREGRINE, TMP  # noqa: E402


def add(data, name, password):
    return subprocess.run([PEREGRINE, "user", "add", name, "--data-dir", data],
                          input=password + "\n", capture_output=True,
                          text=True, check=True)


class UsersFileTest(unittest.TestCase):
    def test_user_add_takes_effect_without_sighup(self):
        data = tempfile.mkdtemp(dir=TMP)
        add(data, "first", "first-password")
        d = Daemon("[auth]\nallow_without_tls = true\n", data=data)
        try:
            r = add(data, "second", "second-password")
            self.assertIn(f"saved second in {data}/users", r.stdout)
            deadline = time.time() + 5
            while True:
                try:
                    with smtplib.SMTP("127.0.0.1", d.submission,
                                      local_hostname="c.test", timeout=10) as s:
                        s.login("second", "second-password")
                    break
                except smtplib.SMTPAuthenticationError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)
            with open(d.log.name) as f:
                self.assertIn("changed: 2 users now", f.read())
        finally:
            d.stop()


if __name__ == "__main__":
    unittest.main()
