#!/usr/bin/python3
"""Delivery end to end: the daemon, NSD on loopback giving MX records, and
Postfix's smtp-sink as the destinations, with its fault options.

Nothing leaves 127.0.0.0/8: MX hosts resolve to 127.0.0.x, and the daemon's
DNS server is the NSD started here.

Over 800 lines, one concern: delivery's behaviour seen from outside, each
case sharing the fixtures (NSD zones, sinks, the daemon) defined here.
"""
import os
import random
import shutil
import re
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import dkim

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, TMP, Daemon, Nsd, Sink,  # noqa: E402
                     free_port, terminal_events)


def send(d, recipients, count=1, subject="hello", body="test\r\n"):
    with d.smtp() as s:
        for i in range(count):
            s.sendmail("sender@src.test", recipients,
                       f"Subject: {subject} {i}\r\n\r\n{body}")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def seconds(duration):
    """absl's "105ms", "2.103s" or "1m2s" (short ones only) in seconds."""
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration[:-1])


def log_of(d):
    return read(os.path.join(d.data, "daemon.log"))


def wait_log(d, pattern, count=1, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(re.findall(pattern, log_of(d))) >= count:
            return True
        time.sleep(0.1)
    return False


class BrokenTlsServer:
    """An SMTP server on loopback that offers STARTTLS, then answers the
    TLS handshake with garbage; without STARTTLS it takes mail."""

    def __init__(self, coalesce):
        # coalesce: the garbage goes in the same write as the 220.
        self.coalesce = coalesce
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.messages = 0
        self.starttls = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,),
                             daemon=True).start()

    def session(self, conn):
        f = conn.makefile("rwb")

        def say(line):
            f.write(line.encode() + b"\r\n")
            f.flush()
        try:
            say("220 broken.test ESMTP")
            while True:
                line = f.readline().decode().strip().upper()
                if not line:
                    return
                if line.startswith("EHLO"):
                    say("250-broken.test")
                    say("250 STARTTLS")
                elif line == "STARTTLS":
                    self.starttls += 1
                    f.write(b"220 go ahead\r\n")
                    if not self.coalesce:
                        f.flush()
                        time.sleep(0.1)
                    f.write(b"this is not TLS at all\r\n" * 4)
                    f.flush()
                    return
                elif line == "DATA":
                    say("354 go on")
                    while f.readline().rstrip(b"\r\n") != b".":
                        pass
                    self.messages += 1
                    say("250 2.0.0 taken")
                elif line == "QUIT":
                    say("221 bye")
                    return
                else:
                    say("250 ok")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.sock.close()


class DeliveryTest(unittest.TestCase):
    def daemon(self, nsd, sink_port, extra=""):
        return Daemon(nsd.dns_config() +
                      f"[delivery]\nport = {sink_port}\n"
                      'retry_first = "1s"\nretry_max = "2s"\n'
                      'idle_timeout = "1s"\nconnect_timeout = "2s"\n' + extra)

    def test_delivers_by_mx_and_empties_the_queue(self):
        sink = Sink()
        nsd = Nsd({"dest.test": ["@ IN MX 10 mx1.dest.test.",
                                 "mx1 IN A 127.0.0.1"],
                   "other.test": ["@ IN MX 5 mx1.dest.test."]})
        d = self.daemon(nsd, sink.port)
        try:
            send(d, ["a@dest.test", "b@dest.test", "c@other.test"], count=3)
            self.assertEqual(sink.wait_for(6), 6)  # 3 x (dest, other).
            self.assertTrue(wait_log(d, r"delivered id=", 9))
            log = log_of(d)
            self.assertIn("host=mx1.dest.test[127.0.0.1]", log)
            self.assertRegex(log, r'reply="250 ')
            dump = read(sink.messages()[0])
            self.assertIn("Subject: hello", dump)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.queue("list").strip(), "", "queue not empty")
            # Each message received once; each recipient one terminal event.
            events = d.events()
            self.assertEqual(
                len([e for e in events if e["type"] == "received"]), 3)
            final = terminal_events(d)
            self.assertEqual(len(final), 9)
            self.assertEqual(set(final.values()), {"delivered"})
            delivered = [e for e in events if e["type"] == "delivered"]
            self.assertEqual(delivered[0]["mx"], "mx1.dest.test")
            self.assertEqual(delivered[0]["ip"], "127.0.0.1")
            self.assertEqual(delivered[0]["code"], 250)
            self.assertEqual(delivered[0]["site"], "mx1.dest.test")
        except BaseException:
            print(log_of(d))
            print(read(sink.dir + ".log"))
            raise
        finally:
            if d.proc.poll() is None:
                d.stop()
            nsd.stop()
            sink.stop()


    def run_case(self, zones, sinks, extra, body):
        """Starts NSD with `zones`, the daemon on the first sink's port,
        runs body(d), and prints the logs when it fails."""
        nsd = Nsd(zones)
        d = self.daemon(nsd, sinks[0].port, extra)
        try:
            body(d)
        except BaseException:
            print(log_of(d))
            for s in sinks:
                print(read(s.dir + ".log"))
            raise
        finally:
            if d.proc.poll() is None:
                d.stop()
            nsd.stop()
            for s in sinks:
                s.stop()

    def test_signed_at_reception_verifies_at_the_destination(self):
        key = os.path.join(tempfile.mkdtemp(dir=TMP), "s1.key")
        out = subprocess.run([PEREGRINE, "dkim", "keygen", "--domain",
                              "src.test", "--selector", "s1", "--out", key],
                             capture_output=True, text=True, check=True).stdout
        record = "".join(re.findall(r'"([^"]*)"', re.search(
            r"^  Value: (.*)$", out, re.M).group(1)))
        sink = Sink()
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}

        def body(d):
            with d.smtp() as s:
                s.sendmail("a@src.test", ["b@dest.test"],
                           "From: A <a@src.test>\r\nTo: b@dest.test\r\n"
                           "Subject: signed and delivered\r\n\r\n"
                           "Hello,\r\n.leading dot\r\n\r\nbye\r\n")
            self.assertTrue(wait_log(d, r"delivered id="))  # File complete.
            with open(sink.messages()[0], "rb") as f:
                dump = f.read()
            # smtp-sink puts its own fields (X-Client-Addr, Received) first;
            # unsigned, they do not matter to the signature.
            message = dump.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self.assertEqual(message.count(b"DKIM-Signature:"), 1)
            self.assertIn(b"\r\n.leading dot\r\n", message)  # Unstuffed.
            self.assertTrue(
                dkim.verify(message,
                            dnsfunc=lambda name, timeout=5: record.encode()),
                message.decode(errors="replace"))
        self.run_case(zones, [sink],
                      f'[[dkim.keys]]\ndomain = "src.test"\n'
                      f'selector = "s1"\nkey_file = "{key}"\n', body)

    def test_recipients_of_a_domain_share_one_transaction(self):
        sink = Sink()
        zones = {"x.test": ["@ IN MX 10 mx.x.test.", "mx IN A 127.0.0.1"],
                 "y.test": ["@ IN MX 10 mx.y.test.", "mx IN A 127.0.0.1"]}

        def body(d):
            # x.test's recipients are not adjacent in the envelope.
            send(d, ["a@x.test", "b@y.test", "c@x.test"])
            self.assertTrue(wait_log(d, r"delivered id=", 3))
            dumps = [read(p) for p in sink.messages()]
            self.assertEqual(len(dumps), 2)  # One per domain.
            both = [t for t in dumps if "a@x.test" in t and "c@x.test" in t]
            self.assertEqual(len(both), 1, dumps)
        self.run_case(zones, [sink], "", body)

    def test_implicit_mx_when_the_domain_has_only_an_address(self):
        sink = Sink()
        zones = {"plain.test": ["@ IN A 127.0.0.1"]}  # No MX record.

        def body(d):
            send(d, ["a@plain.test"])
            self.assertEqual(sink.wait_for(1), 1)
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@plain.test> "
                                        r"host=plain.test\[127.0.0.1\]"))
        self.run_case(zones, [sink], "", body)

    def test_next_mx_after_refused_connect_and_4xx_greeting(self):
        port = free_port()
        good = Sink(port=port)
        greylist = Sink("-r", "connect", host="127.0.0.3", port=port)
        zones = {"dest.test": ["@ IN MX 10 down.dest.test.",
                               "@ IN MX 20 grey.dest.test.",
                               "@ IN MX 30 good.dest.test.",
                               "down IN A 127.0.0.2",  # Nothing listens.
                               "grey IN A 127.0.0.3",
                               "good IN A 127.0.0.1"]}

        def body(d):
            send(d, ["x@dest.test"], count=2)
            self.assertEqual(good.wait_for(2), 2)
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<x@dest.test> "
                                        r"host=good.dest.test\[127.0.0.1\]", 2))
            log = log_of(d)
            self.assertNotIn("deferred", log)
            self.assertEqual(greylist.messages(), [])
        self.run_case(zones, [good, greylist], "", body)

    def test_ipv6_mx_address(self):
        # The MX host has only an AAAA record; the sink listens on ::1.
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback on this machine")
        port = free_port()
        v6 = Sink(host="::1", port=port)
        zones = {"six.test": ["@ IN MX 10 mx.six.test.",
                              "mx IN AAAA ::1"]}

        def body(d):
            send(d, ["a@six.test"])
            self.assertEqual(v6.wait_for(1), 1)
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@six.test> "
                                        r"host=mx.six.test\[::1\]"))
        self.run_case(zones, [v6], "", body)

    def test_a_dead_first_mx_is_tried_last_for_a_while(self):
        # A listener whose accept queue is full drops SYNs: connects to it
        # hang until connect_timeout, like a blackholed host.
        port = free_port()
        hole = socket.socket()
        hole.bind(("127.0.0.2", port))
        hole.listen(0)
        fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.2", port))
            fillers.append(f)
        time.sleep(0.2)
        sink = Sink(port=port)
        zones = {"dest.test": ["@ IN MX 10 dead.dest.test.",
                               "@ IN MX 20 live.dest.test.",
                               "dead IN A 127.0.0.2",
                               "live IN A 127.0.0.1"]}

        def body(d):
            send(d, ["a@dest.test"])
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@dest.test> "
                                        r"host=live.dest.test"))
            first = re.findall(r"delay=(\S+)", log_of(d))[0]
            time.sleep(2)  # The idle connection has gone.
            send(d, ["b@dest.test"])
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<b@dest.test> "
                                        r"host=live.dest.test"))
            second = re.findall(r"to=<b@dest.test> .* delay=(\S+)",
                                log_of(d))[0]
            print(f"first delivery {first} (through a connect timeout), "
                  f"second {second}")
            self.assertGreaterEqual(seconds(first), 1.9)  # The timeout.
            self.assertLess(seconds(second), 1.0)
        try:
            # connect_timeout is 2s; a hole that accepts after all would
            # hit the greeting timeout instead.
            self.run_case(zones, [sink], 'command_timeout = "2s"\n', body)
        finally:
            for f in fillers:
                f.close()
            hole.close()

    def test_replies_per_recipient_and_their_outcomes(self):
        # 5xx on RCPT: failed at once and gone from the queue; 4xx: deferred
        # and tried again on the retry schedule until max_age expires it.
        hard = Sink("-f", "rcpt")
        soft = Sink("-r", "rcpt", host="127.0.0.3", port=hard.port)
        zones = {"hard.test": ["@ IN MX 10 mx.hard.test.",
                               "mx IN A 127.0.0.1"],
                 "soft.test": ["@ IN MX 10 mx.soft.test.",
                               "mx IN A 127.0.0.3"],
                 "nullmx.test": ["@ IN MX 0 ."]}

        def body(d):
            send(d, ["h@hard.test", "s@soft.test", "n@nullmx.test"])
            self.assertTrue(wait_log(d, r"failed id=\S+ to=<h@hard.test> "
                                        r'attempts=1 reply="5\d\d '))
            self.assertTrue(wait_log(d, r"failed id=\S+ to=<n@nullmx.test> "
                                        r'attempts=1 reply="556 5.1.10 '))
            self.assertTrue(wait_log(d, r"deferred id=\S+ to=<s@soft.test> "
                                        r'attempts=1 next=\S+ reply="4\d\d '))
            self.assertTrue(wait_log(d, r"deferred id=\S+ to=<s@soft.test> "
                                        r"attempts=2 "))
            self.assertTrue(wait_log(d, r"expired id=\S+ to=<s@soft.test>",
                                     timeout=20))
            self.assertEqual(d.stop(), 0)
            # What stays queued is the sender's DSNs (src.test has no DNS
            # here): from <> to the sender, nothing of the message itself.
            left = d.queue("list")
            self.assertEqual(len(re.findall(r"from <>\n", left)), 2, left)
            self.assertEqual(re.findall(r"<(\S+@\S+)>  attempts", left),
                             ["sender@src.test"] * 2, left)
            # The event log: one terminal event each, replies structured.
            outcomes = {rcpt: kind for (_, rcpt), kind
                        in terminal_events(d).items()}
            self.assertEqual(outcomes, {"h@hard.test": "failed",
                                        "n@nullmx.test": "failed",
                                        "s@soft.test": "expired"})
            events = d.events()
            null_mx = [e for e in events if e["recipient"] == "n@nullmx.test"
                       and e["type"] == "failed"]
            self.assertEqual((null_mx[0]["code"], null_mx[0]["enhanced"],
                              null_mx[0]["category"]),
                             (556, "5.1.10", "bad_domain"))
            soft = [e for e in events if e["recipient"] == "s@soft.test"
                    and e["type"] != "bounce"]
            self.assertEqual([e["type"] for e in soft][:2],
                             ["deferred", "deferred"])
            self.assertEqual(soft[0]["attempt"], 1)
            self.assertIsNotNone(soft[0]["next_attempt"])
            self.assertEqual(soft[-1]["reason"][:len("expired after")],
                             "expired after")
            self.assertEqual(soft[-1]["category"], "expired")
            self.assertTrue(wait_log(d, r"failed id=\S+ to=<n@nullmx.test> "
                                        r".* category=bad_domain"))
        self.run_case(zones, [hard, soft], 'max_age = "4s"\n', body)

    def test_421_defers_and_backs_off_the_site(self):
        sink = Sink("-Q", "mail")
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}

        def body(d):
            send(d, ["a@dest.test"])
            self.assertTrue(wait_log(d, r"deferred id=\S+ to=<a@dest.test> "
                                        r'attempts=1 next=\S+ reply="421 '))
            self.assertTrue(wait_log(d, r"site mx.dest.test: backing off for "
                                        r"2s at 50% of its rates"))
        self.run_case(zones, [sink], 'backoff_pause = "2s"\n', body)

    def test_old_servers_helo_and_no_pipelining(self):
        port = free_port()
        helo_only = Sink("-e", port=port)
        no_pipelining = Sink("-p", host="127.0.0.3", port=port)
        zones = {"old.test": ["@ IN MX 10 mx.old.test.",
                              "mx IN A 127.0.0.1"],
                 "slow.test": ["@ IN MX 10 mx.slow.test.",
                               "mx IN A 127.0.0.3"]}

        def body(d):
            send(d, ["a@old.test", "b@old.test", "c@slow.test",
                     "d@slow.test"], count=3)
            self.assertEqual(helo_only.wait_for(3), 3)
            self.assertEqual(no_pipelining.wait_for(3), 3)
            self.assertTrue(wait_log(d, r"delivered id=", 12))
            self.assertNotIn("deferred", log_of(d))
        self.run_case(zones, [helo_only, no_pipelining], "", body)

    def test_suspended_site_keeps_its_mail_until_resumed_by_sighup(self):
        sink = Sink()
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}

        def body(d):
            send(d, ["a@dest.test"])
            # Held, not deferred: no attempt counted, nothing sent.
            self.assertTrue(wait_log(d, r"site domain:dest.test: suspended: "
                                        r"its mail is held"))
            time.sleep(0.5)
            self.assertEqual(sink.messages(), [])
            self.assertNotIn("deferred id=", log_of(d))
            self.assertIn("<a@dest.test>  attempts=0", d.queue("list"))
            # Resumed by editing the file and SIGHUP: no restart.
            with open(d.cfg) as f:
                text = f.read()
            with open(d.cfg, "w") as f:
                f.write(text.replace("suspended = true", "suspended = false"))
            d.proc.send_signal(signal.SIGHUP)
            self.assertTrue(wait_log(d, r"applied: delivery.sites"))
            # Released at once, not at a retry hours later.
            self.assertEqual(sink.wait_for(1, timeout=5), 1)
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@dest.test>"))
        self.run_case(zones, [sink], '[[delivery.sites]]\n'
                      'domains = ["dest.test"]\nsuspended = true\n', body)

    def test_rate_limit_spreads_200_messages_over_10_seconds(self):
        sink = Sink()
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}

        def body(d):
            send(d, ["a@dest.test"], count=200)
            self.assertEqual(sink.wait_for(200, timeout=40), 200)
            times = sorted(os.path.getmtime(f) for f in sink.messages())
            spread = times[-1] - times[0]
            print(f"200 messages at 20/s arrived over {spread:.1f} s")
            # A burst of up to 20 goes at once: about 9 s; generous bounds.
            self.assertGreater(spread, 7)
            self.assertLess(spread, 20)
        self.run_case(zones, [sink], '[[delivery.sites]]\n'
                      'mx_suffixes = ["dest.test"]\nmessage_rate = "20/s"\n',
                      body)

    def test_opportunistic_tls_falls_back_to_plain_text(self):
        for coalesce in (True, False):
            with self.subTest(coalesce=coalesce):
                self.tls_fallback(coalesce)

    def tls_fallback(self, coalesce):
        server = BrokenTlsServer(coalesce)
        nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                 "mx IN A 127.0.0.1"]})
        d = self.daemon(nsd, server.port)
        try:
            send(d, ["a@dest.test"])
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@dest.test> "
                                        r"\S+ tls=none attempts=1 "))
            self.assertEqual(server.starttls, 1)
            self.assertEqual(server.messages, 1)
            self.assertIn("trying again without TLS", log_of(d))
        except BaseException:
            print(log_of(d))
            raise
        finally:
            d.stop()
            nsd.stop()
            server.stop()

    def test_egress_source_address_and_ehlo_name(self):
        sink = Sink()
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}

        def body(d):
            send(d, ["a@dest.test"])
            # The sink makes its file at MAIL and fills it before its 250.
            self.assertTrue(wait_log(d, r"delivered id="))
            dump = read(sink.messages()[0])
            self.assertIn("X-Client-Addr: 127.0.0.5", dump)
            self.assertIn("X-Helo-Args: out5.example.test", dump)
        self.run_case(zones, [sink],
                      '[[delivery.sources]]\nname = "five"\n'
                      'address = "127.0.0.5"\nehlo = "out5.example.test"\n'
                      'pool = "warm"\n'
                      '[[delivery.sites]]\ndomains = ["dest.test"]\n'
                      'pool = "warm"\n', body)

    def test_drain_finishes_the_transaction_in_flight(self):
        sink = Sink("-w", "2")  # Answers DATA after 2 s.
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}

        def body(d):
            send(d, ["a@dest.test"])
            self.assertTrue(wait_log(d, r"received id="))
            time.sleep(0.8)  # The transaction is under way.
            started = time.time()
            self.assertEqual(d.stop(), 0)
            self.assertLess(time.time() - started, 10)
            self.assertRegex(log_of(d), r"delivered id=\S+ to=<a@dest.test>")
            self.assertEqual(d.queue("list").strip(), "")
        self.run_case(zones, [sink], "", body)

    def test_kill_9_during_delivery_loses_nothing(self):
        slow = Sink("-w", "30")
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}
        nsd = Nsd(zones)
        d = self.daemon(nsd, slow.port)
        try:
            send(d, ["a@dest.test"])
            time.sleep(1)
            d.stop(signal.SIGKILL)
            slow.stop()
            good = Sink(port=slow.port)
            try:
                # Same data directory: the message is still queued.
                d2 = Daemon(nsd.dns_config() +
                            f"[delivery]\nport = {good.port}\n", data=d.data)
                try:
                    self.assertEqual(good.wait_for(1), 1)
                    self.assertTrue(wait_log(d2, r"delivered id=\S+ "
                                                 r"to=<a@dest.test>"))
                finally:
                    d2.stop()
            finally:
                good.stop()
        finally:
            if d.proc.poll() is None:
                d.stop()
            nsd.stop()

    def test_damaged_queued_body_fails_at_once_instead_of_retrying(self):
        # Its spool segment deleted by hand: the body will not come back, so
        # the recipient fails now (554 5.3.0), not after days of retries.
        zones = {"dest.test": ["@ IN MX 10 mx.dest.test.",
                               "mx IN A 127.0.0.1"]}
        nsd = Nsd(zones)
        closed = free_port()  # Nothing listens: the first attempt defers.
        d = self.daemon(nsd, closed)
        try:
            send(d, ["a@dest.test"])
            self.assertTrue(wait_log(d, r"deferred id=\S+ to=<a@dest.test>"))
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(os.path.join(d.data, "queue", "spool"))
            good = Sink()
            try:
                d2 = Daemon(nsd.dns_config() +
                            f"[delivery]\nport = {good.port}\n"
                            'retry_first = "1s"\n', data=d.data)
                try:
                    self.assertTrue(wait_log(
                        d2, r"failed id=\S+ to=<a@dest.test> attempts=2 "
                            r'reply="554 5.3.0 queued message damaged'))
                    self.assertIn("spool segments that are missing",
                                  log_of(d2))
                    self.assertEqual(good.messages(), [])
                finally:
                    d2.stop()
                self.assertNotIn("a@dest.test", d2.queue("list"))
            finally:
                good.stop()
        finally:
            if d.proc.poll() is None:
                d.stop()
            nsd.stop()

    def test_kill_9_during_injection_then_each_delivered_once(self):
        # Mail acknowledged with 250 survives kill -9 at random moments
        # (delivery held meanwhile) and is then delivered exactly once.
        sink = Sink()
        nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                 "mx IN A 127.0.0.1"]})
        # Kills also land while the spool's reserve is being written.
        held = (nsd.dns_config() + "[delivery]\nenabled = false\n"
                '[queue]\nspool_reserve = "128MiB"\n')
        d = Daemon(held)
        acked, unsure = [], []
        rng = random.Random(7)
        n = 0
        try:
            for crash in range(3):
                deadline = time.time() + rng.uniform(0.3, 1.0)
                killer = threading.Timer(deadline - time.time(),
                                         d.proc.kill)
                killer.start()
                try:
                    while d.proc.poll() is None and n < 3000:
                        n += 1
                        subject = f"crash-test-{n:05d}"
                        try:
                            with smtplib.SMTP("127.0.0.1", d.port,
                                              timeout=5) as s:
                                s.sendmail("a@src.test", ["x@dest.test"],
                                           f"Subject: {subject}\r\n\r\n"
                                           + "body line\r\n" * 50)
                            acked.append(subject)
                        except (OSError, smtplib.SMTPException):
                            unsure.append(subject)
                            break
                finally:
                    killer.cancel()
                d.proc.wait()
                d.log.close()
                d = Daemon(held, data=d.data)
            d.stop()
            d = Daemon(nsd.dns_config() +
                       f"[delivery]\nport = {sink.port}\n"
                       '[queue]\nspool_reserve = "128MiB"\n', data=d.data)
            self.assertGreater(len(acked), 10)
            sink.wait_for(len(acked), timeout=60)
            wait_log(d, r"delivered id=", len(acked), timeout=60)
            time.sleep(1)  # Files of the last transactions are complete.
            seen = {}
            for path in sink.messages():
                m = re.search(r"Subject: (crash-test-\d+)", read(path))
                if m:
                    seen[m.group(1)] = seen.get(m.group(1), 0) + 1
            missing = [a for a in acked if a not in seen]
            twice = [k for k, v in seen.items() if v > 1]
            strangers = [k for k in seen if k not in acked and
                         k not in unsure]
            print(f"acknowledged {len(acked)}, unsure {len(unsure)}, "
                  f"arrived {len(seen)}")
            self.assertEqual(missing, [])
            self.assertEqual(twice, [])
            self.assertEqual(strangers, [])
        except BaseException:
            print(log_of(d))
            raise
        finally:
            if d.proc.poll() is None:
                d.stop()
            nsd.stop()
            sink.stop()

    def test_smarthost_with_auth(self):
        relay = Sink()
        zones = {}

        def body(d):
            send(d, ["a@anywhere.test", "b@anywhere.test"])
            self.assertEqual(relay.wait_for(1), 1)
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<b@anywhere"))
            time.sleep(0.5)
            self.assertEqual(len(relay.messages()), 1)  # One transaction.
            dump = read(relay.messages()[0])
            self.assertIn("a@anywhere.test", dump)
            self.assertIn("b@anywhere.test", dump)
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@anywhere.test>"
                                        r" host=127.0.0.1\[127.0.0.1\]"))
        self.run_case(zones, [relay],
                      f'[smarthost]\nhost = "127.0.0.1"\nport = {relay.port}\n'
                      'tls = "none"\nuser = "app"\npassword = "secret"\n', body)

    def test_smarthost_failures_are_explained(self):
        relay = Sink("-f", "auth")

        def body(d):
            send(d, ["a@anywhere.test"])
            self.assertTrue(wait_log(d, r"refused the login for user 'app'.*"
                                        r"app password"))
            self.assertTrue(wait_log(d, r"deferred id=\S+ to=<a@anywhere"))
        self.run_case({}, [relay],
                      f'[smarthost]\nhost = "127.0.0.1"\nport = {relay.port}\n'
                      'tls = "none"\nuser = "app"\npassword = "wrong"\n', body)

    def test_smarthost_tls_modes_against_a_peregrine_relay(self):
        # The relay is another Peregrine with a user: implicit TLS on its
        # 465-style port and STARTTLS on its 587-style port both work with
        # AUTH; each mode against the other port is explained.
        data = tempfile.mkdtemp(dir=TMP)
        subprocess.run([PEREGRINE, "user", "add", "app", "--data-dir", data],
                       input="correct-horse\n", capture_output=True,
                       text=True, check=True)
        relay = Daemon(data=data)
        nsd = Nsd({})
        cases = [
            ("implicit", relay.submissions, "delivered id=\\S+ to=<a@x.test>"),
            ("starttls", relay.submission, "delivered id=\\S+ to=<a@x.test>"),
            ("starttls", relay.submissions,
             "sent no greeting: it probably expects TLS from the first byte"),
            ("implicit", relay.submission,
             "speaks plain SMTP first: .*starttls"),
        ]
        try:
            for mode, port, expect in cases:
                d = Daemon(nsd.dns_config() +
                           '[delivery]\ncommand_timeout = "2s"\n'
                           'retry_first = "1m"\n'
                           f'[smarthost]\nhost = "127.0.0.1"\nport = {port}\n'
                           f'tls = "{mode}"\nverify = false\n'
                           'user = "app"\npassword = "correct-horse"\n')
                try:
                    send(d, ["a@x.test"])
                    self.assertTrue(wait_log(d, expect, timeout=15),
                                    f"{mode} on {port}: {log_of(d)}")
                finally:
                    d.stop()
            self.assertEqual(relay.stop(), 0)
            listing = relay.queue("list")
            self.assertEqual(listing.count("a@x.test"), 2, listing)
        finally:
            if relay.proc.poll() is None:
                relay.stop()
            nsd.stop()

    def test_message_too_large_for_the_relay_fails_with_the_reason(self):
        relay = Daemon('[smtp]\nmax_message_size = "2KiB"\n')
        nsd = Nsd({})
        d = Daemon(nsd.dns_config() + "[delivery]\n" +
                   f'[smarthost]\nhost = "127.0.0.1"\nport = {relay.port}\n'
                   'tls = "none"\n')
        try:
            send(d, ["big@x.test"], body="x" * 70 + "\r\n" * 100 +
                 ("y" * 70 + "\r\n") * 60)
            self.assertTrue(wait_log(d, r"failed id=\S+ to=<big@x.test> "
                                        r'attempts=1 reply="552 5.3.4 .*'
                                        r"refuses messages this large"))
        except BaseException:
            print(log_of(d))
            raise
        finally:
            d.stop()
            relay.stop()
            nsd.stop()

    def test_smarthost_timeout_names_the_firewall(self):
        # Nothing answers on 127.0.0.2:PORT; a short connect timeout.
        port = free_port()
        sink = Sink(port=port)  # Unused: on 127.0.0.1 only.

        def body(d):
            send(d, ["a@anywhere.test"])
            self.assertTrue(wait_log(d, r"smarthost 127.0.0.2:\d+.*"
                                        r"(refused|firewall)"))
        self.run_case({}, [sink],
                      f'[smarthost]\nhost = "127.0.0.2"\nport = {port}\n'
                      'tls = "none"\n', body)

    def test_tls_policies_against_a_peregrine_with_a_self_signed_cert(self):
        # The destination is another Peregrine (reception only) with its
        # self-signed certificate: opportunistic and required deliver over
        # TLS (unverified); verify refuses it.
        dest = Daemon()
        zones = {"open.test": ["@ IN MX 10 mx.open.test.",
                               "mx IN A 127.0.0.1"],
                 "must.test": ["@ IN MX 10 mx.must.test.",
                               "mx IN A 127.0.0.1"],
                 "check.test": ["@ IN MX 10 mx.check.test.",
                                "mx IN A 127.0.0.1"]}
        nsd = Nsd(zones)
        d = self.daemon(nsd, dest.port,
                        '[[delivery.sites]]\ndomains = ["must.test"]\n'
                        'tls = "required"\n'
                        '[[delivery.sites]]\ndomains = ["check.test"]\n'
                        'tls = "verify"\n')
        try:
            send(d, ["a@open.test", "b@must.test", "c@check.test"])
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<a@open.test> "
                                        r"\S+ tls=TLSv1.3 \S+ unverified"))
            self.assertTrue(wait_log(d, r"delivered id=\S+ to=<b@must.test> "
                                        r"\S+ tls=TLSv1.3 \S+ unverified"))
            self.assertTrue(wait_log(d, r"deferred id=\S+ to=<c@check.test> "
                                        r".*certificate verify failed"))
            self.assertEqual(dest.stop(), 0)
            listing = dest.queue("list")
            self.assertIn("a@open.test", listing)
            self.assertIn("b@must.test", listing)
            self.assertNotIn("c@check.test", listing)
        except BaseException:
            print(log_of(d))
            raise
        finally:
            for p in (d, dest):
                if p.proc.poll() is None:
                    p.stop()
            nsd.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
