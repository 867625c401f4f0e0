#!/usr/bin/env python3
"""End-to-end tests of `peregrine serve`: the real binary on loopback.

Start on built-in defaults, log backend and listeners, answer on every
listener, drain and exit 0 on SIGTERM/SIGINT, reload on SIGHUP, refuse a
port in use or a data directory in use (exit 2), fall back to epoll when
io_uring is refused by seccomp.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import NO_IO_URING, PEREGRINE, TMP, free_port  # noqa: E402


class Daemon:
    """A running `peregrine serve`, its stderr collected in a file."""

    def __init__(self, args, prefix=()):
        self.log_path = tempfile.mktemp(dir=TMP, suffix=".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            list(prefix) + [PEREGRINE, "serve"] + list(args),
            stderr=self.log, stdout=subprocess.DEVNULL, cwd=TMP)

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for(self, needle, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.text():
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in log:\n{self.text()}")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        start = time.time()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        return code, time.time() - start

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def config_file(text):
    path = tempfile.mktemp(dir=TMP, suffix=".toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def ports_config(extra_server="", **ports):
    relay = ports.get("relay", free_port())
    return relay, config_file(f"""
[server]
shards = 2
{extra_server}
[listen]
relay = "127.0.0.1:{relay}"
submission = "127.0.0.1:{ports.get('submission', free_port())}"
submissions = "127.0.0.1:{ports.get('submissions', free_port())}"
admin = "127.0.0.1:{ports.get('admin', free_port())}"

[dns]
# Tests never send DNS beyond loopback: a dead local port.
servers = ["127.0.0.1:{free_port()}"]
""")


class ServeTest(unittest.TestCase):
    def test_defaults_start_log_answer_and_stop_on_sigterm(self):
        data = tempfile.mkdtemp(dir=TMP)
        d = Daemon(["--data-dir", data])
        try:
            d.wait_for("listening on 127.0.0.1:2465")
            log = d.text()
            self.assertIn("I/O backend io_uring", log)
            self.assertIn("data directory: " + data, log)
            self.assertIn(f"queue {data}/queue: recovered 0 messages", log)
            # The default reserve (256 MiB) waits for the first mail: an
            # instance that was only tried out keeps its disk.
            self.assertIn("spool: a new queue; its reserve of 4 ready "
                          "segments (256 MiB) is written once mail has come "
                          "in", log)
            spool = os.path.join(data, "queue", "spool")
            self.assertEqual(
                [f for f in os.listdir(spool) if f.startswith("spare-")], [])
            for port, kind in ((2525, "relay"), (2587, "submission"),
                               (2465, "submissions"), (8025, "admin")):
                self.assertIn(f"listening on 127.0.0.1:{port}", log)
            with socket.create_connection(("127.0.0.1", 2525), timeout=5) as s:
                greeting = s.recv(512).decode()
            self.assertTrue(greeting.startswith("220 "), greeting)
            # Submission greets, offers STARTTLS, and wants it before MAIL.
            with socket.create_connection(("127.0.0.1", 2587), timeout=5) as s:
                self.assertTrue(s.recv(512).startswith(b"220 "))
                s.sendall(b"EHLO c\r\n")
                time.sleep(0.2)
                self.assertIn(b"STARTTLS", s.recv(4096))
                s.sendall(b"MAIL FROM:<a@b.test>\r\n")
                self.assertTrue(s.recv(512).startswith(b"530 "))
            with socket.create_connection(("127.0.0.1", 8025), timeout=5) as s:
                # The admin port on the defaults: the daemon is ready.
                s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                self.assertTrue(s.recv(512).startswith(b"HTTP/1.1 200"))
            self.assertTrue(os.path.exists(os.path.join(data, "peregrine.lock")))
            # Every thread but the main one (which takes signals in
            # sigtimedwait) blocks SIGTERM, RocksDB's threads included:
            # otherwise a SIGTERM can kill the daemon without a drain.
            pid = d.proc.pid
            tasks = os.listdir(f"/proc/{pid}/task")
            self.assertGreater(len(tasks), 3)
            for tid in tasks:
                if int(tid) == pid:
                    continue
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)$",
                                            f.read(), re.M).group(1), 16)
                self.assertTrue(blocked & (1 << (signal.SIGTERM - 1)),
                                f"thread {tid} does not block SIGTERM")
            code, took = d.stop(signal.SIGTERM)
            self.assertEqual(code, 0, d.text())
            self.assertLess(took, 10)
            self.assertIn("stopped", d.text())
        finally:
            d.kill()

    def test_sigint_also_drains_and_exits_0(self):
        _, cfg = ports_config()
        d = Daemon(["--config", cfg, "--data-dir", tempfile.mkdtemp(dir=TMP)])
        try:
            d.wait_for("listening on")
            code, _ = d.stop(signal.SIGINT)
            self.assertEqual(code, 0)
            self.assertIn("SIGINT: no longer accepting", d.text())
        finally:
            d.kill()

    def test_port_in_use_exits_2_naming_key_and_file(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            _, cfg = ports_config(relay=port)
            r = subprocess.run([PEREGRINE, "serve", "--config", cfg,
                                "--data-dir", tempfile.mkdtemp(dir=TMP)],
                               capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"{cfg}:6: listen.relay", r.stderr)
        self.assertIn("Address already in use", r.stderr)

    def test_second_daemon_on_same_data_dir_exits_2(self):
        data = tempfile.mkdtemp(dir=TMP)
        _, cfg1 = ports_config()
        _, cfg2 = ports_config()
        d = Daemon(["--config", cfg1, "--data-dir", data])
        try:
            d.wait_for("listening on")
            r = subprocess.run([PEREGRINE, "serve", "--config", cfg2,
                                "--data-dir", data],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(f"(pid {d.proc.pid}) already runs", r.stderr)
        finally:
            d.stop()
            d.kill()

    def test_forced_epoll_backend(self):
        _, cfg = ports_config('io_backend = "epoll"')
        d = Daemon(["--config", cfg, "--data-dir", tempfile.mkdtemp(dir=TMP)])
        try:
            d.wait_for("listening on")
            self.assertIn("I/O backend epoll,", d.text())
            self.assertNotIn("I/O backend epoll (auto)", d.text())
        finally:
            self.assertEqual(d.stop()[0], 0)
            d.kill()

    def test_auto_falls_back_to_epoll_when_seccomp_refuses_io_uring(self):
        relay, cfg = ports_config()
        d = Daemon(["--config", cfg, "--data-dir", tempfile.mkdtemp(dir=TMP)],
                   prefix=[NO_IO_URING])
        try:
            d.wait_for("listening on")
            log = d.text()
            self.assertIn("io_uring unavailable", log)
            self.assertIn("I/O backend epoll (auto)", log)
            with socket.create_connection(("127.0.0.1", relay), timeout=5) as s:
                self.assertTrue(s.recv(512).startswith(b"220 "))
        finally:
            self.assertEqual(d.stop()[0], 0)
            d.kill()

    def test_forced_io_uring_refused_by_seccomp_fails_clearly(self):
        _, cfg = ports_config('io_backend = "io_uring"')
        r = subprocess.run([NO_IO_URING, PEREGRINE, "serve", "--config", cfg,
                            "--data-dir", tempfile.mkdtemp(dir=TMP)],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("server.io_backend", r.stderr)
        self.assertIn("io_uring", r.stderr)

    def test_sighup_applies_log_level_and_names_restart_keys(self):
        relay, cfg = ports_config()
        d = Daemon(["--config", cfg, "--data-dir", tempfile.mkdtemp(dir=TMP)])
        try:
            d.wait_for("listening on")
            with open(cfg) as f:
                text = f.read()
            with open(cfg, "w") as f:
                f.write(text.replace("shards = 2",
                                     'shards = 1\nlog_level = "warning"'))
            d.proc.send_signal(signal.SIGHUP)
            d.wait_for("take effect after a restart: server.shards")
            self.assertIn("applied: server.log_level", d.text())
            # A broken file on SIGHUP is reported and the daemon keeps going.
            with open(cfg, "w") as f:
                f.write("[server]\nshards = \"many\"\n")
            d.proc.send_signal(signal.SIGHUP)
            d.wait_for("keeping the running configuration")
            self.assertIn("server.shards", d.text())
            with socket.create_connection(("127.0.0.1", relay), timeout=5) as s:
                self.assertTrue(s.recv(512).startswith(b"220 "))
        finally:
            self.assertEqual(d.stop()[0], 0)
            d.kill()

    def test_dkim_keys_load_at_start_and_reload_on_sighup(self):
        keydir = tempfile.mkdtemp(dir=TMP)
        good = os.path.join(keydir, "good.key")
        later = os.path.join(keydir, "later.key")
        subprocess.run([PEREGRINE, "dkim", "keygen", "--domain", "good.test",
                        "--selector", "s1", "--type", "ed25519", "--out", good],
                       check=True, capture_output=True)
        _, cfg = ports_config()
        with open(cfg, "a") as f:
            f.write(f"""
[[dkim.keys]]
domain = "good.test"
selector = "s1"
key_file = "{good}"

[[dkim.keys]]
domain = "later.test"
selector = "s1"
key_file = "{later}"
""")
        d = Daemon(["--config", cfg, "--data-dir", tempfile.mkdtemp(dir=TMP)])
        try:
            d.wait_for("listening on")
            log = d.text()
            self.assertIn("dkim: d=good.test s=s1 (ed25519-sha256) signs mail "
                          "from good.test", log)
            self.assertIn("dkim: d=later.test s=s1 unusable", log)
            self.assertIn("mail from later.test is held", log)
            # The operator makes the missing key and reloads.
            subprocess.run([PEREGRINE, "dkim", "keygen", "--domain", "later.test",
                            "--selector", "s1", "--out", later],
                           check=True, capture_output=True)
            d.proc.send_signal(signal.SIGHUP)
            d.wait_for("dkim: d=later.test s=s1 (rsa-sha256) signs mail")
        finally:
            self.assertEqual(d.stop()[0], 0)
            d.kill()


if __name__ == "__main__":
    unittest.main(verbosity=2)
