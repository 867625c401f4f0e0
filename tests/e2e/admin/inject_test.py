#!/usr/bin/env python3
"""HTTP injection (POST /api/v1/inject, and KumoMTA's /api/inject/v1) into a
running daemon that delivers to smtp-sink through NSD: personalised
messages, each rendering found at the destination; the KumoMTA response
shape; per-recipient failures that do not fail the batch; malformed
requests answered 400 naming the field; the event log's tags."""
import email
import email.policy
import http.client
import json
import os
import sys
import time
import unittest

sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, Nsd, Sink, free_port  # noqa: E402


def post(port, path, payload, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    conn.request("POST", path, body=body,
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, json.loads(data)


class InjectTest(unittest.TestCase):
    def setUp(self):
        self.sink = Sink()
        self.nsd = Nsd({"dest.test": ["@ IN MX 10 mx.dest.test.",
                                      "mx IN A 127.0.0.1"]})
        self.admin = free_port()
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n",
                        admin=f'"127.0.0.1:{self.admin}"')

    def tearDown(self):
        if self.d.proc.poll() is None:
            self.assertEqual(self.d.stop(), 0)
        self.nsd.stop()
        self.sink.stop()

    def test_ten_thousand_personalised_recipients_in_one_request(self):
        n = 10000
        started = time.time()
        status, reply = post(self.admin, "/api/v1/inject", {
            "envelope_sender": "news@src.test",
            "campaign": "black-friday",
            "content": {
                "from": {"email": "news@src.test", "name": "Shop News"},
                "subject": "Hello {{ name }}, {{ discount }} off",
                "text_body": "Dear {{ name }},\nyour code is {{ code }}.\n",
                "html_body": "<p>Dear {{ name }}, code {{ code }}</p>",
                "headers": {"X-Customer": "{{ code }}"},
            },
            "substitutions": {"discount": "20%"},
            "recipients": [
                {"email": f"user{i}@dest.test", "name": f"User <{i}>",
                 "substitutions": {"code": f"C{i:05d}"}}
                for i in range(n)],
        })
        took = time.time() - started
        print(f"{n} recipients queued in {took:.2f} s")
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["success_count"], n)
        self.assertEqual(reply["fail_count"], 0)
        self.assertEqual(reply["failed_recipients"], [])
        self.assertEqual(len(reply["ids"]), n)
        self.assertEqual(self.sink.wait_for(n, timeout=240), n)
        seen = set()
        for path in self.sink.messages():
            with open(path, "rb") as f:
                raw = f.read()
            # smtp-sink's dump: the envelope lines, then the message.
            start = raw.find(b"\nReceived:")
            msg = email.message_from_bytes(raw[start + 1:],
                                           policy=email.policy.default)
            code = msg["X-Customer"]
            i = int(code[1:])
            seen.add(i)
            self.assertEqual(msg["Subject"], f"Hello User <{i}>, 20% off")
            self.assertIn(f"user{i}@dest.test", msg["To"])
            self.assertTrue(msg["Message-ID"])
            self.assertTrue(msg["Date"])
            text = msg.get_body(("plain",)).get_content()
            html = msg.get_body(("html",)).get_content()
            self.assertIn(f"Dear User <{i}>,\nyour code is {code}.", text)
            # Values are HTML-escaped in the HTML body.
            self.assertIn(f"Dear User &lt;{i}&gt;, code {code}", html)
        self.assertEqual(seen, set(range(n)))
        self.assertEqual(self.d.stop(), 0)
        received = [e for e in self.d.events() if e["type"] == "received"]
        self.assertEqual(len(received), n)
        self.assertTrue(all(e["listener"] == "http" for e in received))
        self.assertTrue(all(e["tags"].get("campaign") == "black-friday"
                            for e in received))

    def test_kumomta_shape_raw_content_and_partial_failure(self):
        status, reply = post(self.admin, "/api/inject/v1", {
            "envelope_sender": "app@src.test",
            "content": "Subject: Your order {{ order }}\r\n"
                       "From: app@src.test\r\n\r\nOrder {{ order }} shipped."
                       "\r\n",
            "recipients": [
                {"email": "buyer@dest.test", "substitutions": {"order": 42}},
                {"email": "not an address"},
                {"email": "x@dest.test", "substitutions": {"order": 7}},
            ],
        })
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["success_count"], 2)
        self.assertEqual(reply["fail_count"], 1)
        self.assertEqual(reply["failed_recipients"], ["not an address"])
        self.assertEqual(len(reply["errors"]), 1)
        self.assertEqual(self.sink.wait_for(2), 2)
        bodies = []
        for path in self.sink.messages():
            with open(path, "rb") as f:
                bodies.append(f.read())
        self.assertTrue(any(b"Subject: Your order 42" in b and
                            b"Order 42 shipped." in b for b in bodies))
        self.assertTrue(any(b"Message-ID: <" in b for b in bodies))

    def test_a_batch_past_the_memory_budget_fails_alone_per_recipient(self):
        self.assertEqual(self.d.stop(), 0)
        self.d = Daemon(self.nsd.dns_config() +
                        f"[delivery]\nport = {self.sink.port}\n"
                        '[admin]\ninject_memory = "1MiB"\n',
                        admin=f'"127.0.0.1:{self.admin}"')
        text = ("y" * 99 + "\n") * 2000  # 200 KB each.
        status, reply = post(self.admin, "/api/v1/inject", {
            "envelope_sender": "a@src.test",
            "content": {"subject": "big {{ name }}", "text_body": text},
            "recipients": [f"r{i}@dest.test" for i in range(20)]})
        self.assertEqual(status, 200, reply)
        self.assertGreaterEqual(reply["success_count"], 1)
        self.assertGreaterEqual(reply["fail_count"], 1)
        self.assertEqual(reply["success_count"] + reply["fail_count"], 20)
        self.assertTrue(all("admin.inject_memory" in e
                            for e in reply["errors"]), reply["errors"])
        ok = reply["success_count"]
        self.assertEqual(self.sink.wait_for(ok), ok)
        # Once answered, the budget is free again.
        status, reply = post(self.admin, "/api/v1/inject", {
            "envelope_sender": "a@src.test",
            "content": {"subject": "small", "text_body": "x"},
            "recipients": ["after@dest.test"]})
        self.assertEqual(reply["success_count"], 1, reply)

    def test_malformed_requests_are_400_naming_the_field(self):
        for payload, field in [
            (b"{not json", "JSON"),
            ({"content": "x", "recipients": ["a@dest.test"]},
             "envelope_sender"),
            ({"envelope_sender": "a@src.test", "recipients": ["a@dest.test"]},
             "content"),
            ({"envelope_sender": "a@src.test", "content": "Subject: x\r\n\r\n"
              "y\r\n", "recipients": []}, "recipients"),
            ({"envelope_sender": "a@src.test", "content": {"subject": "x"},
              "recipients": ["a@dest.test"]}, "text_body"),
            ({"envelope_sender": "a@src.test",
              "content": {"text_body": "x", "headers": {"Bad Name": "v"}},
              "recipients": ["a@dest.test"]}, "content.headers"),
        ]:
            status, reply = post(self.admin, "/api/v1/inject", payload)
            self.assertEqual(status, 400, payload)
            self.assertIn(field, reply["error"]["message"])
        # A broken template: mstch renders what it can; never a crash.
        status, reply = post(self.admin, "/api/v1/inject", {
            "envelope_sender": "a@src.test",
            "content": {"text_body": "{{#open}} never {{/other}} {{"},
            "recipients": ["t@dest.test"]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["success_count"] + reply["fail_count"], 1)
        # Header injection through a substitution is flattened.
        status, reply = post(self.admin, "/api/v1/inject", {
            "envelope_sender": "a@src.test",
            "content": {"subject": "{{ s }}", "text_body": "x"},
            "recipients": [{"email": "h@dest.test", "substitutions": {
                "s": "hi\r\nBcc: victim@dest.test"}}]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.sink.wait_for(1 + reply["success_count"]), 2)
        raw = b""
        for path in self.sink.messages():
            with open(path, "rb") as f:
                got = f.read()
            if b"h@dest.test" in got:
                raw = got
        self.assertNotIn(b"\nBcc:", raw)
        self.assertIn(b"Subject: hi  Bcc: victim@dest.test", raw)


if __name__ == "__main__":
    unittest.main()
