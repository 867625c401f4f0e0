#!/usr/bin/env python3
"""Webhooks from a running daemon delivering to smtp-sink: a receiver that
answers 500 at first, then recovers, gets every event at least once (a
batch refused is sent again whole, under the same number), in order per
message, each batch signed with HMAC-SHA256 of the key file; a receiver
that is down never holds delivery up; a webhook without a readable key
stops the start with a message naming it."""
import hashlib
import hmac
import http.server
import json
import os
import smtplib
import sys
import threading
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, Nsd, Sink, free_port, wait_until  # noqa: E402

KEY = "0123456789abcdef0123456789abcdef"


class Receiver:
    """An HTTP server on loopback answering `script` (then 200) to POSTs."""

    def __init__(self, script):
        self.script = list(script)
        self.batches = []  # (number, events, status answered)
        self.bad_signatures = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Peregrine-Timestamp"]
                want = "sha256=" + hmac.new(
                    KEY.encode(), stamp.encode() + b"." + body,
                    hashlib.sha256).hexdigest()
                if not hmac.compare_digest(
                        want, self.headers["X-Peregrine-Signature"]):
                    outer.bad_signatures += 1
                status = outer.script.pop(0) if outer.script else 200
                outer.batches.append((self.headers["X-Peregrine-Batch"],
                                      json.loads(body), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()

    def accepted(self):
        """Events of the batches answered 200, each batch once."""
        seen, events = set(), []
        for number, batch, status in self.batches:
            if status == 200 and number not in seen:
                seen.add(number)
                events.extend(batch)
        return events

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def send(d, n):
    with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
        for i in range(n):
            s.sendmail("a@src.test", [f"u{i}@dest.test"],
                       f"Subject: {i}\r\n\r\nbody\r\n")


class WebhookTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"]})
        self.receivers = []
        self.d = None

    def start(self, url, events='["received", "delivered"]'):
        d = Daemon(self.nsd.dns_config() +
                   f"[delivery]\nport = {self.sink.port}\n"
                   "[[admin.webhooks]]\n"
                   f'url = "{url}"\nsecret_file = "hook.key"\n'
                   f"events = {events}\nbatch = 8\n",
                   admin=f'"127.0.0.1:{free_port()}"',
                   data=self.data_with_key())
        return d

    def data_with_key(self):
        import tempfile
        data = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
        with open(os.path.join(data, "hook.key"), "w") as f:
            f.write(KEY + "\n")
        return data

    def tearDown(self):
        if self.d is not None and self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        for r in self.receivers:
            r.stop()
        self.nsd.stop()
        self.sink.stop()

    def test_a_receiver_that_fails_then_recovers_gets_every_event(self):
        r = Receiver([500, 500])
        self.receivers.append(r)
        self.d = self.start(f"http://127.0.0.1:{r.port}/events")
        send(self.d, 20)
        self.assertEqual(self.sink.wait_for(20), 20)
        # received + delivered for each of 20 messages.
        self.assertTrue(wait_until(lambda: len(r.accepted()) >= 40,
                                   timeout=30), len(r.accepted()))
        events = r.accepted()
        self.assertEqual(len(events), 40)
        self.assertEqual(r.bad_signatures, 0)
        # The refused batch came again, whole, under its number.
        refused = [b for b in r.batches if b[2] == 500]
        self.assertEqual(len(refused), 2)
        again = [b for b in r.batches if b[0] == refused[0][0] and
                 b[2] == 200]
        self.assertEqual(len(again), 1)
        self.assertEqual(again[0][1], refused[0][1])
        # In order per message: received before delivered.
        order = {}
        for e in events:
            order.setdefault(e["id"], []).append(e["type"])
        self.assertEqual(len(order), 20)
        for types in order.values():
            self.assertEqual(types, ["received", "delivered"])
        self.assertEqual(self.d.stop(), 0)
        with open(os.path.join(self.d.data, "daemon.log")) as f:
            log = f.read()
        self.assertIn("answered HTTP 500; sent again in 1s", log)
        self.assertIn("takes events again", log)

    def test_a_receiver_down_never_holds_delivery_up(self):
        self.d = self.start(f"http://127.0.0.1:{free_port()}/nobody")
        started = time.time()
        send(self.d, 10)
        self.assertEqual(self.sink.wait_for(10), 10)
        self.assertLess(time.time() - started, 20)
        # Stopping gives the hook its grace, then drops what it held.
        self.assertEqual(self.d.stop(), 0)
        with open(os.path.join(self.d.data, "daemon.log")) as f:
            self.assertIn("events not delivered", f.read())

    def test_a_webhook_without_its_key_stops_the_start(self):
        data = self.data_with_key()
        os.remove(os.path.join(data, "hook.key"))
        with self.assertRaises(AssertionError):
            Daemon(self.nsd.dns_config() +
                   "[[admin.webhooks]]\n"
                   'url = "http://127.0.0.1:1/x"\nsecret_file = "hook.key"\n',
                   data=data)
        with open(os.path.join(data, "daemon.log")) as f:
            log = f.read()
        self.assertIn("admin.webhooks", log)
        self.assertIn("hook.key", log)


if __name__ == "__main__":
    unittest.main()
