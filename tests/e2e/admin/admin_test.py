#!/usr/bin/env python3
"""The admin port of a running daemon, with real clients (curl, Python's
http.client, prometheus_client's parser): health, metrics, errors with JSON
bodies, bearer tokens on a listener that is not loopback, and hostile
clients (garbage, huge headers, a pipelined flood that never reads, an idle
keep-alive at shutdown)."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # A python3 that is not Debian's: use Debian's package.
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, Daemon, free_port  # noqa: E402


def curl(port, path, *args):
    out = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=20)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def raw(port, data, read=True):
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(data)
        if not read:
            return b""
        s.settimeout(5)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk


class AdminTest(unittest.TestCase):
    def test_health_metrics_and_errors_on_loopback(self):
        port = free_port()
        d = Daemon(admin=f'"127.0.0.1:{port}"')
        try:
            self.assertEqual(curl(port, "/livez")[0], 200)
            code, body = curl(port, "/readyz")
            self.assertEqual(code, 200)
            self.assertEqual(json.loads(body)["status"], "ready")

            # Mail in, then counted by /metrics.
            with d.smtp() as s:
                s.sendmail("a@src.test", ["b@dest.test", "c@dest.test"],
                           "Subject: x\r\n\r\nbody\r\n")
            code, text = curl(port, "/metrics")
            self.assertEqual(code, 200)
            families = {f.name: f for f in text_string_to_metric_families(text)}
            received = families["peregrine_messages_received"]
            self.assertEqual(received.type, "counter")
            self.assertEqual(
                sum(s.value for s in received.samples
                    if s.name.endswith("_total")), 1)
            self.assertEqual(
                families["peregrine_queue_messages"].samples[0].value, 1)
            self.assertGreaterEqual(
                families["peregrine_queue_commits"].samples[0].value, 1)
            tls = {(s.labels["direction"], s.labels["version"]): s.value
                   for s in families["peregrine_tls"].samples
                   if s.name.endswith("_total")}
            self.assertEqual(tls, {("in", "none"): 1})
            self.assertIn("peregrine_spool_bytes", families)
            # Group commits: a histogram of time and of writes carried.
            commit = families["peregrine_queue_commit_seconds"]
            self.assertEqual(commit.type, "histogram")
            count = [x.value for x in commit.samples
                     if x.name.endswith("_count")]
            self.assertGreaterEqual(count[0], 1)
            inf = [x.value for x in commit.samples
                   if x.labels.get("le") == "+Inf"]
            self.assertEqual(inf, count)
            self.assertEqual(
                families["peregrine_queue_commit_writes"].type, "histogram")
            # Each shard's loop: busy seconds, a counter.
            busy = families["peregrine_shard_busy_seconds"]
            self.assertEqual(busy.type, "counter")
            self.assertEqual(
                sorted(x.labels["shard"] for x in busy.samples
                       if x.name.endswith("_total")), ["0", "1"])
            self.assertTrue(all(x.value >= 0 for x in busy.samples))
            directions = {x.labels["direction"]
                          for x in families["peregrine_connections"].samples}
            self.assertEqual(directions, {"in", "out"})
            self.assertIn("peregrine_dkim_messages", families)
            # The queue by state and age, counted a few seconds after start.
            def counted():
                return "peregrine_queue_recipients{" in curl(
                    port, "/metrics")[1]
            deadline = time.time() + 20
            while not counted() and time.time() < deadline:
                time.sleep(0.2)
            families = {f.name: f for f in
                        text_string_to_metric_families(
                            curl(port, "/metrics")[1])}
            states = {x.labels["state"]: x.value for x in
                      families["peregrine_queue_recipients"].samples}
            self.assertEqual(states, {"queued": 2, "deferred": 0})
            ages = {x.labels["minutes"]: x.value for x in
                    families["peregrine_queue_recipients_by_age"].samples}
            self.assertEqual(ages["0"], 2)
            self.assertEqual(ages["1280"], 0)

            # The queue's summary (delivery is off: the message waits).
            code, body = curl(port, "/api/v1/queue/summary")
            self.assertEqual(code, 200, body)
            summary = json.loads(body)
            self.assertEqual(summary["messages"], 1)
            self.assertEqual(summary["recipients"], 2)
            self.assertEqual(summary["by_state"]["queued"], 2)
            self.assertEqual(len(summary["by_domain"]), 1)
            self.assertEqual(summary["by_domain"][0]["domain"], "dest.test")
            self.assertEqual(summary["by_domain"][0]["recipients"], 2)
            # Ages like qshape's: all of it under five minutes old.
            self.assertEqual(summary["by_domain"][0]["ages"]["0"], 2)
            self.assertEqual(summary["age_minutes"]["0"], 2)

            # Errors are JSON, with the right codes.
            code, body = curl(port, "/api/v1/nothing")
            self.assertEqual(code, 404)
            self.assertEqual(json.loads(body)["error"]["code"], 404)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", "/metrics", body=b"{}")
            r = conn.getresponse()
            self.assertEqual(r.status, 405)
            self.assertIn("GET", r.getheader("Allow"))
            r.read()
            # Keep-alive: the same connection serves the next request.
            conn.request("GET", "/livez")
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
            # HEAD: the headers alone.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("HEAD", "/readyz")
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.read(), b"")
            conn.close()

            reply = raw(port, b"GARBAGE\r\n\r\n")
            self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply)
            self.assertIn(b'"code":400', reply)
            reply = raw(port, b"GET / HTTP/1.1\r\nX: " + b"a" * 40000 +
                        b"\r\n\r\n")
            self.assertTrue(reply.startswith(b"HTTP/1.1 431 "), reply)
            reply = raw(port, b"POST /metrics HTTP/1.1\r\n"
                        b"Content-Length: 999999999999\r\n\r\n")
            self.assertTrue(reply.startswith(b"HTTP/1.1 413 "), reply)
            # Pipelined: every answer, in order, on one connection.
            reply = raw(port, b"GET /livez HTTP/1.1\r\n\r\n" * 3 +
                        b"GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n")
            self.assertEqual(reply.count(b"HTTP/1.1 200 OK"), 4)
            self.assertLess(reply.index(b'"live"'), reply.index(b'"ready"'))
        finally:
            self.assertEqual(d.stop(), 0)

    def test_a_flood_that_never_reads_costs_one_answer(self):
        port = free_port()
        d = Daemon(admin=f'"127.0.0.1:{port}"')
        flood = socket.create_connection(("127.0.0.1", port), 5)
        try:
            flood.setblocking(False)
            request = b"GET /metrics HTTP/1.1\r\n\r\n" * 1000
            limit = 64 << 20
            sent = 0
            stalled_since = None
            deadline = time.time() + 20
            while time.time() < deadline and sent < limit:
                try:
                    sent += flood.send(request)
                    stalled_since = None
                except BlockingIOError:
                    stalled_since = stalled_since or time.time()
                    if time.time() - stalled_since > 1:
                        break
                    time.sleep(0.05)
            # It stopped taking input (its answers wait to be read), so the
            # socket buffers fill; others are served meanwhile.
            self.assertLess(sent, limit)
            self.assertEqual(curl(port, "/livez")[0], 200)
            rss = 0
            with open(f"/proc/{d.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            self.assertLess(rss, 200 * 1024)
        finally:
            flood.close()
            self.assertEqual(d.stop(), 0)

    def test_an_idle_keep_alive_does_not_hold_up_shutdown(self):
        port = free_port()
        d = Daemon(admin=f'"127.0.0.1:{port}"')
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/livez")
        self.assertEqual(conn.getresponse().status, 200)
        started = time.time()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.time() - started, 10)
        conn.close()

    def test_not_loopback_needs_a_token(self):
        # No tokens file: the daemon refuses to start, saying what to do.
        cfg = os.path.join(TMP, "no-tokens.toml")
        with open(cfg, "w") as f:
            f.write('[listen]\nrelay = []\nsubmission = []\n'
                    'submissions = []\nadmin = "0.0.0.0:0"\n')
        out = subprocess.run(
            [PEREGRINE, "serve",
             "--config", cfg, "--data-dir", os.path.join(TMP, "nt")],
            capture_output=True, text=True, timeout=30)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("admin.tokens_file", out.stderr)
        self.assertIn("not a loopback address", out.stderr)

        token = "3f1c" * 8
        port = free_port()
        data = os.path.join(TMP, "with-tokens")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "tokens"), "w") as f:
            f.write(f"# the monitoring\n{token}\n")
        d = Daemon(admin=f'"0.0.0.0:{port}"', data=data,
                   extra='[admin]\ntokens_file = "tokens"\n')
        try:
            code, body = curl(port, "/metrics")
            self.assertEqual(code, 401)
            self.assertIn("Bearer", json.loads(body)["error"]["message"])
            self.assertEqual(
                curl(port, "/metrics", "-H", "Authorization: Bearer wrong")[0],
                401)
            self.assertEqual(
                curl(port, "/metrics", "-H",
                     f"Authorization: Bearer {token}")[0], 200)
            # Probes need no token.
            self.assertEqual(curl(port, "/livez")[0], 200)
            self.assertEqual(curl(port, "/readyz")[0], 200)
        finally:
            self.assertEqual(d.stop(), 0)

    def test_https_with_the_tls_certificate(self):
        port = free_port()
        d = Daemon(admin=f'"127.0.0.1:{port}"', extra="[admin]\ntls = true\n")
        try:
            out = subprocess.run(
                ["curl", "-sk", "-o", "-", "-w", "\n%{http_code}",
                 f"https://127.0.0.1:{port}/livez"],
                capture_output=True, text=True, timeout=20)
            self.assertEqual(out.stdout.rpartition("\n")[2], "200", out)
            # Plain HTTP gets no answer (TLS from the first byte).
            self.assertEqual(curl(port, "/livez")[0], 0)
            # The CLI speaks TLS when the configuration says so.
            r = subprocess.run(
                [PEREGRINE, "queue", "summary", "--config", d.cfg,
                 "--data-dir", d.data],
                capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("messages 0", r.stdout)
            # A handshake that never comes is cut like an idle client, and
            # garbage instead of a ClientHello closes the connection.
            self.assertEqual(raw(port, b"GET / HTTP/1.1\r\n\r\n"), b"")
        finally:
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
