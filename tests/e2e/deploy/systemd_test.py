#!/usr/bin/python3
"""The systemd side of deployment:

- `systemd-analyze verify` accepts deploy/peregrine.service with nothing to
  say (an unknown or misspelled directive would be printed), its binary
  path pointed at the built one;
- sd_notify, with a datagram socket standing in for systemd's
  NOTIFY_SOCKET: READY=1 comes once the daemon accepts mail (its relay port
  answers by then), WATCHDOG=1 at half of WATCHDOG_USEC, STATUS= lines,
  and STOPPING=1 when SIGTERM starts the drain.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, Daemon  # noqa: E402


class SystemdTest(unittest.TestCase):
    def test_unit_verifies(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze is not installed")
        work = tempfile.mkdtemp(dir=TMP)
        with open("deploy/peregrine.service") as f:
            unit = f.read()
        self.assertIn("Type=notify", unit)
        self.assertIn("CapabilityBoundingSet=CAP_NET_BIND_SERVICE", unit)
        self.assertIn("SystemCallFilter=@system-service io_uring_setup "
                      "io_uring_enter io_uring_register", unit)
        path = os.path.join(work, "peregrine.service")
        with open(path, "w") as f:
            f.write(unit.replace("/usr/local/bin/peregrine",
                                 os.path.abspath(PEREGRINE)))
        r = subprocess.run(["systemd-analyze", "verify", path],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Nothing said about our unit (other units of the machine may warn).
        said = [l for l in (r.stdout + r.stderr).splitlines()
                if "peregrine.service" in l]
        self.assertEqual(said, [])

    def test_notify_protocol(self):
        # An abstract socket: the test directory's path is too long for one
        # in the file system.
        name = f"peregrine-notify-test-{os.getpid()}"
        path = "@" + name
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name)
        sock.settimeout(30)
        saved = dict(os.environ)
        os.environ["NOTIFY_SOCKET"] = path
        os.environ["WATCHDOG_USEC"] = "400000"  # A ping every 0.2 s.
        try:
            d = Daemon("")
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            got = []
            deadline = time.time() + 30
            while time.time() < deadline:
                got.append(sock.recv(4096).decode())
                if sum("WATCHDOG=1" in g for g in got) >= 3:
                    break
            ready = [g for g in got if "READY=1" in g]
            self.assertEqual(len(ready), 1, got)
            self.assertIn("STATUS=accepting mail", ready[0])
            # Ready came after the listeners: the first message said so.
            self.assertIn("READY=1", got[0])
            with socket.create_connection(("127.0.0.1", d.port), 5) as c:
                self.assertTrue(c.recv(100).startswith(b"220"))
            self.assertGreaterEqual(sum("WATCHDOG=1" in g for g in got), 3)
            d.proc.send_signal(15)
            stopping = None
            while stopping is None:
                g = sock.recv(4096).decode()
                if "STOPPING=1" in g:
                    stopping = g
            self.assertIn("STATUS=draining", stopping)
            self.assertEqual(d.proc.wait(timeout=30), 0)
        finally:
            if d.proc.poll() is None:
                d.proc.kill()
            sock.close()


if __name__ == "__main__":
    unittest.main()
