#!/usr/bin/python3
"""Defect 15: a users file (or DKIM key) created by root with mode 0600 is
unreadable to the service user, and the daemon started anyway without
AUTH. Now it refuses to start (exit 2) and prints the chown to run. The
daemon runs as `nobody` here (setpriv), since root reads every file."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, free_port  # noqa: E402


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"),
                     "needs root and setpriv to run the daemon as nobody")
class UnreadableFilesTest(unittest.TestCase):
    def test_serve_refuses_with_the_fix_to_run(self):
        # Not under the test's own temporary folder: a path nobody can
        # traverse would fail earlier, on the configuration file.
        data = tempfile.mkdtemp(prefix="peregrine-t15-", dir="/tmp")
        self.addCleanup(shutil.rmtree, data, True)
        os.chmod(data, 0o755)
        subprocess.run([PEREGRINE, "user", "add", "app", "--data-dir", data,
                        "--users-file", os.path.join(data, "users")],
                       input="app-password\n", capture_output=True, text=True,
                       check=True)
        users = os.path.join(data, "users")
        os.chown(users, 0, 0)
        os.chmod(users, 0o600)
        spool = os.path.join(data, "run")
        os.makedirs(spool)
        os.chown(spool, 65534, 65534)
        cfg = os.path.join(data, "peregrine.toml")
        with open(cfg, "w") as f:
            f.write(f'[listen]\nrelay = "127.0.0.1:{free_port()}"\n'
                    'submission = []\nsubmissions = []\nadmin = []\n'
                    f'[auth]\nusers_file = "{users}"\n'
                    '[delivery]\nenabled = false\n'
                    '[queue]\nspool_reserve = "0"\n')
        # The executable's directory may be closed to nobody: use a copy.
        exe = os.path.join(data, "peregrine")
        shutil.copy(PEREGRINE, exe)
        os.chmod(exe, 0o755)
        r = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             exe, "serve", "--config", cfg, "--data-dir", spool],
            capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"users file {users}: cannot read", r.stderr)
        self.assertIn("owner root, mode 0600", r.stderr)
        self.assertIn(f"chown nobody {users}", r.stderr)


if __name__ == "__main__":
    unittest.main()
