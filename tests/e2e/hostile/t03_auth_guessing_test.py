#!/usr/bin/python3
"""Defect 3: 200 connections from 4 addresses guessing passwords made a
legitimate login take 7.4 s instead of 0.04 s (891 guesses in 30 s), since
every check waited in one scrypt queue. Now guesses from an address that
keeps failing are refused without a check (454) once its budget is spent,
checks of clean addresses go first, and the user's login stays fast."""
import base64
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon, add_user  # noqa: E402


def guesser(port, source, stop, counts):
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=20,
                                         source_address=(source, 0))
        except OSError:
            time.sleep(0.05)
            continue
        with s:
            f = s.makefile("rb")
            try:
                f.readline()
                s.sendall(b"EHLO guesser.test\r\n")
                while f.readline()[3:4] == b"-":
                    pass
                for n in range(3):
                    if stop.is_set():
                        return
                    token = base64.b64encode(b"\0app\0guess%d" % n)
                    s.sendall(b"AUTH PLAIN " + token + b"\r\n")
                    reply = f.readline()
                    code = reply[:3].decode(errors="replace")
                    counts[code] = counts.get(code, 0) + 1
                    if code == "421" or not reply:
                        break
            except OSError:
                pass


def login_seconds(port):
    t = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO user.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        start = time.time()
        s.sendall(b"AUTH PLAIN " +
                  base64.b64encode(b"\0app\0correct-horse") + b"\r\n")
        reply = f.readline()
    return reply, time.time() - start, time.time() - t


class AuthGuessingTest(unittest.TestCase):
    def test_a_user_logs_in_fast_while_four_addresses_guess(self):
        data = tempfile.mkdtemp(dir=TMP)
        add_user(data, "app", "correct-horse")
        d = Daemon("[auth]\nallow_without_tls = true\n"
                   "[smtp]\nmax_connections_per_client = 100\n",
                   data=data, server='drain_timeout = "1s"')
        stop = threading.Event()
        counts = {}
        threads = [threading.Thread(
            target=guesser,
            args=(d.submission, f"127.0.0.{12 + i % 4}", stop, counts))
            for i in range(200)]
        try:
            for t in threads:
                t.start()
            time.sleep(3)  # The attack is under way.
            timings = []
            for _ in range(5):
                reply, auth_s, _ = login_seconds(d.submission)
                self.assertTrue(reply.startswith(b"235"), reply)
                timings.append(auth_s)
                time.sleep(0.3)
            stop.set()
            self.assertIsNone(d.proc.poll(), "daemon died")
            code = d.stop()  # Closes the guessers' connections.
            with open(d.log.name) as f:
                tail = f.read()[-6000:]
            self.assertEqual(code, 0, tail)
            for t in threads:
                t.join(timeout=30)
            print(f"login under attack: {timings} s; guess replies {counts}")
            # Guessers got 535 a few times each, then 454 without a check.
            self.assertGreater(counts.get("454", 0), 0, counts)
            self.assertLessEqual(counts.get("535", 0), 4 * 12, counts)
            timings.sort()
            self.assertLess(timings[2], 1.0, f"login took {timings}")
        finally:
            stop.set()
            if d.proc.poll() is None:
                d.stop()


if __name__ == "__main__":
    unittest.main()
