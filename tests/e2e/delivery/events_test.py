#!/usr/bin/env python3
"""The JSON event log of a running daemon: what it records for mail that is
received, refused and delivered; SIGHUP reopening it after logrotate moved
it; standard output for containers; and a file that cannot be written (a
full disk: /dev/full), which loses events, never mail."""
import os
import re
import signal
import smtplib
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon, Nsd, Sink, check_events  # noqa: E402


def send(d, recipients, subject="hello"):
    with d.smtp() as s:
        s.sendmail("sender@src.test", recipients,
                   f"Subject: {subject}\r\n\r\nbody\r\n")


def log_of(d):
    with open(os.path.join(d.data, "daemon.log"), errors="replace") as f:
        return f.read()


def wait_for(what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if what():
            return True
        time.sleep(0.05)
    return False


def read_json_lines(path):
    import json
    with open(path) as f:
        return [json.loads(line) for line in f]


class EventsTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx1.dest.test.",
                                      "mx1 IN A 127.0.0.1"]})
        self.d = None

    def tearDown(self):
        if self.d is not None and self.d.proc.poll() is None:
            self.d.stop()
        self.nsd.stop()
        self.sink.stop()

    def start(self, events):
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n"
                        'idle_timeout = "200ms"\n' + events)
        return self.d

    def test_received_refused_and_delivered(self):
        d = self.start('[events]\npath = "events.json"\n')
        try:
            send(d, ["a@dest.test", "b@dest.test"])
            # Submission without AUTH: refused, and recorded as such.
            with smtplib.SMTP("127.0.0.1", d.submission,
                              local_hostname="app.test", timeout=10) as s:
                s.ehlo()
                code, _ = s.mail("app@src.test")
                self.assertEqual(code, 530)
            self.assertEqual(self.sink.wait_for(1), 1)
            self.assertTrue(wait_for(lambda: len(re.findall(
                "delivered id=", log_of(d))) == 2))
            self.assertEqual(d.stop(), 0)
            events = d.events()
            by_type = {}
            for e in events:
                by_type.setdefault(e["type"], []).append(e)
            received = by_type["received"][0]
            self.assertEqual(received["recipients"],
                             ["a@dest.test", "b@dest.test"])
            self.assertEqual(received["sender"], "sender@src.test")
            self.assertEqual(received["client"], "127.0.0.1")
            self.assertEqual(received["helo"], "client.test")
            self.assertEqual(received["listener"], "relay")
            self.assertEqual(received["code"], 250)
            rejected = by_type["rejected"][0]
            self.assertEqual((rejected["code"], rejected["enhanced"]),
                             (530, "5.7.0"))
            self.assertEqual(rejected["listener"], "submission")
            self.assertEqual(rejected["helo"], "app.test")
            self.assertTrue(rejected["reason"])
            delivered = by_type["delivered"]
            self.assertEqual(len(delivered), 2)
            for e in delivered:
                self.assertEqual(e["id"], received["id"])
                self.assertEqual(e["mx"], "mx1.dest.test")
                self.assertEqual(e["attempt"], 1)
                self.assertEqual(e["code"], 250)
                self.assertGreaterEqual(e["queue_time_ms"], 0)
                self.assertTrue(e["time"].endswith("Z"))
        except BaseException:
            print(log_of(d))
            raise

    def test_sighup_reopens_after_logrotate(self):
        d = self.start('[events]\npath = "events.json"\n')
        path = os.path.join(d.data, "events.json")
        try:
            send(d, ["a@dest.test"], "first")
            self.assertTrue(wait_for(lambda: os.path.exists(path) and len(
                read_json_lines(path)) == 2))  # received, delivered
            os.rename(path, path + ".1")
            d.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: "SIGHUP" in log_of(d)))
            send(d, ["b@dest.test"], "second")
            self.assertTrue(wait_for(lambda: os.path.exists(path) and len(
                read_json_lines(path)) == 2))
            self.assertEqual(d.stop(), 0)
            old = read_json_lines(path + ".1")
            new = read_json_lines(path)
            self.assertEqual([e["type"] for e in old],
                             ["received", "delivered"])
            self.assertEqual(old[1]["recipient"], "a@dest.test")
            self.assertEqual(new[1]["recipient"], "b@dest.test")
            check_events(old + new)
        except BaseException:
            print(log_of(d))
            raise

    def test_stdout_for_containers(self):
        d = self.start("[events]\nstdout = true\n")
        try:
            send(d, ["a@dest.test"])
            self.assertTrue(wait_for(lambda: "delivered id=" in log_of(d)))
            self.assertEqual(d.stop(), 0)
            events = read_json_lines(os.path.join(d.data, "stdout.log"))
            self.assertEqual([e["type"] for e in events],
                             ["received", "delivered"])
            check_events(events)
        except BaseException:
            print(log_of(d))
            raise

    def test_classification_rules_reload_on_sighup(self):
        # A destination refusing every RCPT; an operator's rule says what
        # that is, then another after SIGHUP.
        refusing = Sink("-f", "rcpt", host="127.0.0.2", port=self.sink.port)
        self.nsd.stop()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx1.dest.test.",
                                      "mx1 IN A 127.0.0.2"]})
        rules = os.path.join(TMP, f"rules-{os.getpid()}.toml")

        def write_rules(category):
            with open(rules, "w") as f:
                f.write(f"[[rule]]\ncategory = \"{category}\"\n"
                        "patterns = ['^5']\n")

        write_rules("policy")
        d = self.start(f'[events]\npath = "events.json"\n'
                       f'[bounce]\nrules_file = "{rules}"\n')
        try:
            send(d, ["a@dest.test"], "first")
            self.assertTrue(wait_for(lambda: re.search(
                r"failed id=\S+ to=<a@dest.test> .* category=policy",
                log_of(d))))
            write_rules("spam_block")
            d.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_for(lambda: "SIGHUP" in log_of(d)))
            send(d, ["b@dest.test"], "second")
            self.assertTrue(wait_for(lambda: re.search(
                r"failed id=\S+ to=<b@dest.test> .* category=spam_block",
                log_of(d))))
            # A broken file keeps the rules in force.
            with open(rules, "w") as f:
                f.write("[[rule]]\ncategory = \"nonsense\"\n")
            d.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_for(
                lambda: "bounce rules not reloaded" in log_of(d)))
            send(d, ["c@dest.test"], "third")
            self.assertTrue(wait_for(lambda: re.search(
                r"failed id=\S+ to=<c@dest.test> .* category=spam_block",
                log_of(d))))
            self.assertEqual(d.stop(), 0)
            failed = {e["recipient"]: e["category"] for e in d.events()
                      if e["type"] == "failed"}
            self.assertEqual(failed, {"a@dest.test": "policy",
                                      "b@dest.test": "spam_block",
                                      "c@dest.test": "spam_block"})
        except BaseException:
            print(log_of(d))
            raise
        finally:
            refusing.stop()
            os.unlink(rules)

    def test_a_full_disk_loses_events_not_mail(self):
        d = self.start('[events]\npath = "/dev/full"\n')
        try:
            for i in range(3):
                send(d, ["a@dest.test"], f"m{i}")
            self.assertEqual(self.sink.wait_for(3), 3)
            self.assertTrue(wait_for(lambda: len(re.findall(
                "delivered id=", log_of(d))) == 3))
            self.assertTrue(wait_for(
                lambda: re.search(r"events: \d+ events dropped \(writing "
                                  r"/dev/full: No space left on device\)",
                                  log_of(d))))
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.queue("list").strip(), "")
        except BaseException:
            print(log_of(d))
            raise


if __name__ == "__main__":
    unittest.main(verbosity=2)
