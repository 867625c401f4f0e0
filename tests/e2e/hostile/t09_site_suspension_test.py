#!/usr/bin/python3
"""Defects 9 and 10, site rules and suspension:
 - [[delivery.sites]] rules were ignored for mail through [smarthost]: a
   suspended site was delivered at once. Now the smarthost is a site (rules
   match its host name) and a rule naming domains makes those domains a
   site of their own, through the smarthost too;
 - suspending a site (SIGHUP) did not stop mail already waiting (352 more
   delivered over 12 s), and resuming left held mail waiting for its next
   retry. Now suspension holds what waits at once (a transaction in flight
   finishes), counts no attempt, and resume releases it at once;
 - what a suspended site held past its in-memory limit (500 transactions)
   went back to the queue for a minute, and a resume left it there until
   then (the 1,000,000-message backlog benchmark waited 40 s). Now every
   shard looks a minute ahead after a resume."""
import signal
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, RawSink, smarthost_to  # noqa: E402


def count(sink, domain):
    return sum(1 for m in list(sink.messages) if domain.encode() in m)


class SiteSuspensionTest(unittest.TestCase):
    def test_suspend_holds_at_once_and_resume_releases_at_once(self):
        sink = RawSink(delay=0.05)
        base = smarthost_to(sink.port)
        rule = ('[[delivery.sites]]\ndomains = ["held.test"]\n'
                'max_connections = 2\nsuspended = {}\n')
        d = Daemon(base + rule.format("false"))
        try:
            with d.smtp() as s:
                for i in range(150):
                    s.sendmail("a@sender.test", [f"r{i}@held.test"],
                               f"Subject: held {i}\r\nTo: r{i}@held.test\r\n"
                               "\r\nx\r\n")
            deadline = time.time() + 20
            while count(sink, "held.test") < 10 and time.time() < deadline:
                time.sleep(0.02)
            # Suspend, with mail waiting and in flight.
            with open(d.cfg) as f:
                cfg = f.read()
            with open(d.cfg, "w") as f:
                f.write(cfg.replace("suspended = false", "suspended = true"))
            d.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 5
            while "suspended:" not in open(d.log.name).read() and \
                    time.time() < deadline:
                time.sleep(0.02)
            at_suspension = count(sink, "held.test")
            time.sleep(2)
            after = count(sink, "held.test")
            # Only the transactions in flight (2 connections) finish.
            self.assertLessEqual(after - at_suspension, 2,
                                 f"{at_suspension} -> {after}")
            self.assertLess(after, 150)
            # Other mail through the smarthost still goes.
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["x@free.test"],
                           "Subject: free\r\nTo: x@free.test\r\n\r\nx\r\n")
            deadline = time.time() + 10
            while count(sink, "free.test") < 1 and time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(count(sink, "free.test"), 1)
            # Held mail counted no attempt.
            listing = d.queue("list", "--limit", "1000")
            self.assertIn("held.test", listing)
            self.assertNotRegex(listing, r"attempts=[1-9]")
            # Resume: released at once, not at the next retry.
            with open(d.cfg, "w") as f:
                f.write(cfg)
            d.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 30
            while count(sink, "held.test") < 150 and time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(count(sink, "held.test"), 150)
            log = open(d.log.name).read()
            self.assertRegex(log, r"site smarthost:domain:held.test: "
                                  r"suspended: \d+ transactions held")
            self.assertRegex(log, r"site smarthost:domain:held.test: resumed")
        finally:
            d.stop()
            sink.stop()

    def test_resume_releases_what_was_parked_in_the_queue_at_once(self):
        sink = RawSink()
        rule = ('[[delivery.sites]]\ndomains = ["held.test"]\n'
                'suspended = {}\n')
        d = Daemon(smarthost_to(sink.port) + rule.format("true"), shards=2)
        try:
            total = 650  # Past the 500 a site holds in memory.
            with d.smtp() as s:
                for i in range(total):
                    s.sendmail("a@sender.test", [f"r{i}@held.test"],
                               f"Subject: {i}\r\nTo: r{i}@held.test\r\n"
                               "\r\nx\r\n")
            deadline = time.time() + 20
            while "more recipients wait in the queue" not in \
                    open(d.log.name).read() and time.time() < deadline:
                time.sleep(0.05)
            self.assertIn("more recipients wait in the queue",
                          open(d.log.name).read())
            self.assertEqual(count(sink, "held.test"), 0)
            with open(d.cfg) as f:
                cfg = f.read()
            with open(d.cfg, "w") as f:
                f.write(cfg.replace("suspended = true", "suspended = false"))
            resumed = time.time()
            d.proc.send_signal(signal.SIGHUP)
            # Well before the minute they were parked for.
            deadline = resumed + 25
            while count(sink, "held.test") < total and \
                    time.time() < deadline:
                time.sleep(0.05)
            self.assertEqual(count(sink, "held.test"), total,
                             f"after {time.time() - resumed:.1f} s")
            listing = d.queue("list", "--limit", "1000")
            self.assertNotIn("held.test", listing)
        finally:
            d.stop()
            sink.stop()

    def test_a_rule_suspends_smarthost_mail_from_the_start(self):
        sink = RawSink()
        d = Daemon(smarthost_to(sink.port) +
                   '[[delivery.sites]]\ndomains = ["held.test"]\n'
                   'suspended = true\n')
        try:
            with d.smtp() as s:
                s.sendmail("a@sender.test", ["a@held.test", "b@free.test"],
                           "Subject: mixed\r\n\r\nx\r\n")
            self.assertEqual(sink.wait_for(1), 1)
            time.sleep(1)
            self.assertEqual(len(sink.messages), 1)
            listing = d.queue("list")
            self.assertIn("queued  <a@held.test>  attempts=0", listing)
            self.assertIn("delivered  <b@free.test>  attempts=1", listing)
        finally:
            d.stop()
            sink.stop()


if __name__ == "__main__":
    unittest.main()
