#!/usr/bin/python3
"""Three Peregrine nodes sharing through a real redis-server (Debian's),
started by the test on a loopback port:
- a site limited to 50/s shared receives 1,000 +- 10% messages in 20 s
  from the three together, each taking part;
- Redis killed in the middle: delivery goes on within the local shares
  (limit / 3 each), and sharing resumes when Redis is back;
- a 421 seen by one node pauses the site on another;
- a suppression added on one node is refused at RCPT by another within a
  second, removed likewise, and a node started later loads the list."""
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, "tests/e2e/cluster")
from cluster_lib import Redis, inject, node  # noqa: E402

sys.path.insert(0, "tests/e2e")
from e2e_lib import (PEREGRINE, TMP, RawSink, free_port,  # noqa: E402
                     wait_until)
from tls_lib import make_ca  # noqa: E402


def count_between(times, start, end):
    return sum(1 for t in times if start <= t < end)


class ClusterTest(unittest.TestCase):
    def setUp(self):
        self.redis = Redis()
        self.sinks = []
        self.nodes = []

    def tearDown(self):
        for n in self.nodes:
            if n.proc.poll() is None:
                n.stop()
        for s in self.sinks:
            s.stop()
        self.redis.stop()

    def sink(self, **kwargs):
        s = RawSink(**kwargs)
        self.sinks.append(s)
        return s

    def start_nodes(self, names, sink_for, **kwargs):
        """Nodes named `names`, each delivering to sink_for(name)."""
        for name in names:
            self.nodes.append(node(name, self.redis, sink_for(name).port,
                                   **kwargs))
        return self.nodes[-len(names):]

    def inject_all(self, nodes, count):
        threads = [threading.Thread(target=inject,
                                    args=(n, count, f"n{i}@src.test"))
                   for i, n in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def test_shared_rate_holds_across_three_nodes(self):
        sink = self.sink()
        nodes = self.start_nodes(["a", "b", "c"], lambda _: sink,
                                 rate="50/s")
        before = self.redis.commands()
        self.inject_all(nodes, 450)
        self.assertTrue(wait_until(lambda: sink.times, 20))
        start = sink.times[0]
        time.sleep(max(0, start + 20.5 - time.time()))
        got = count_between(list(sink.times), start, start + 20)
        per_node = [sum(1 for s, _ in sink.envelopes[:got]
                        if s == f"n{i}@src.test") for i in range(3)]
        used = self.redis.commands() - before
        print(f"20 s at 50/s shared by 3 nodes: {got} messages "
              f"(by node {per_node}); Redis commands {used}, "
              f"{used / max(got, 1):.3f} a message", flush=True)
        self.assertGreaterEqual(got, 900)
        self.assertLessEqual(got, 1100)
        for n in per_node:
            self.assertGreater(n, 100, per_node)

    def test_redis_down_delivery_goes_on_within_local_shares(self):
        sink = self.sink()
        nodes = self.start_nodes(["a", "b", "c"], lambda _: sink,
                                 rate="60/s")
        self.inject_all(nodes, 400)
        self.assertTrue(wait_until(lambda: len(sink.times) > 100, 20))
        self.redis.kill()
        killed = time.time()
        time.sleep(6)
        down = count_between(list(sink.times), killed + 1, killed + 6)
        # Each node at 60 / 3 a second: 60/s together for 5 s, never more
        # than the limit plus the local buckets' bursts.
        print(f"Redis down: {down} messages in 5 s (local shares 3 x 20/s)",
              flush=True)
        self.assertGreater(down, 150)
        self.assertLess(down, 400)
        for n in nodes:
            self.assertIn("redis: unreachable", n.log_text())
        self.redis.start()
        self.assertTrue(wait_until(
            lambda: all("reachable again" in n.log_text() for n in nodes), 15))
        back = time.time()
        time.sleep(5)
        after = count_between(list(sink.times), back + 1, back + 5)
        print(f"Redis back: {after} messages in 4 s", flush=True)
        self.assertGreater(after, 120)
        self.assertLess(after, 330)

    def test_a_421_at_one_node_pauses_the_site_on_another(self):
        refusing = self.sink(refuse={
            "slow@example.test": "421 4.7.0 too many messages, slow down"})
        normal = self.sink()
        a, b = self.start_nodes(
            ["a", "b"], lambda n: refusing if n == "a" else normal,
            rate="20/s", delivery='backoff_pause = "20s"')
        threading.Thread(target=inject, args=(b, 300, "b@src.test")).start()
        self.assertTrue(wait_until(lambda: len(normal.messages) >= 20, 20))
        inject(a, 1, "a@src.test", "slow@example.test")
        self.assertTrue(wait_until(
            lambda: "another node did" in b.log_text(), 10), b.log_text()[-2000:])
        paused_at = len(normal.messages)
        time.sleep(4)
        self.assertLessEqual(len(normal.messages) - paused_at, 2)
        self.assertIn("backing off", a.log_text())

    def test_suppression_added_on_one_node_refused_on_another(self):
        sink = self.sink()
        a, b = self.start_nodes(["a", "b"], lambda _: sink)

        def refused(d, address):
            with d.smtp() as s:
                s.ehlo()
                s.mail("x@src.test")
                code, _ = s.rcpt(address)
                return code == 550

        self.assertFalse(refused(b, "gone@example.test"))
        added = time.time()
        a.cli("suppression", "add", "gone@example.test")
        self.assertTrue(wait_until(lambda: refused(b, "gone@example.test"), 5))
        took = time.time() - added
        print(f"suppression on node a refused at node b after {took:.2f} s",
              flush=True)
        self.assertLess(took, 2.0)
        # A node that starts later reads the shared list.
        c = node("c", self.redis, sink.port)
        self.nodes.append(c)
        self.assertTrue(wait_until(lambda: refused(c, "gone@example.test"), 5))
        a.cli("suppression", "remove", "gone@example.test")
        self.assertTrue(wait_until(
            lambda: not refused(b, "gone@example.test"), 5))


class TlsTest(unittest.TestCase):
    def test_nodes_share_over_tls_as_an_acl_user(self):
        work = tempfile.mkdtemp(dir=TMP)
        ca, leaf = make_ca(work)
        cert, key = leaf("redis", ["localhost"])
        redis = Redis(tls=(cert, key, ca), user=("peregrine", "s3cret"))
        sink = RawSink()
        password = os.path.join(work, "pass")
        with open(password, "w") as f:
            f.write("s3cret\n")
        lines = (f'user = "peregrine"\npassword_file = "{password}"\n'
                 f'tls = true\ntls_ca_file = "{ca}"\n')
        nodes = []
        try:
            for name in ("a", "b"):
                nodes.append(node(name, redis, sink.port, redis_lines=lines,
                                  host="localhost"))
            a, b = nodes

            def refused(d):
                with d.smtp() as s:
                    s.ehlo()
                    s.mail("x@src.test")
                    return s.rcpt("tls@example.test")[0] == 550

            a.cli("suppression", "add", "tls@example.test")
            self.assertTrue(wait_until(lambda: refused(b), 5),
                            b.log_text()[-2000:])
            self.assertIn("tls@example.test",
                          redis.cli("HKEYS", "peregrine:suppression"))
            out = subprocess.run(
                [PEREGRINE, "doctor", "--config", a.cfg, "--domain",
                 "example.test"], capture_output=True, text=True,
                timeout=120).stdout
            self.assertRegex(out, r"✓ redis \S+ \(localhost\): Redis \S+ "
                                  r"answers in \S+ over TLS")
        finally:
            for d in nodes:
                d.stop()
            sink.stop()
            redis.stop()


class DoctorTest(unittest.TestCase):
    def test_doctor_checks_each_redis_address(self):
        redis = Redis()
        dead = free_port()
        data = tempfile.mkdtemp(dir=TMP)
        try:
            redis.cli("CONFIG", "SET", "requirepass", "s3cret")
            with open(os.path.join(data, "pass"), "w") as f:
                f.write("s3cret\n")
            cfg = os.path.join(data, "p.toml")

            def doctor(password_file):
                with open(cfg, "w") as f:
                    f.write(f"""
[redis]
addresses = ["127.0.0.1:{redis.port}", "127.0.0.1:{dead}"]
password_file = "{password_file}"
expected_nodes = 3
[dns]
servers = ["127.0.0.1:{free_port()}"]
timeout = "200ms"
tries = 1
""")
                return subprocess.run(
                    [PEREGRINE, "doctor", "--config", cfg, "--domain",
                     "example.test"], capture_output=True, text=True,
                    timeout=120).stdout

            out = doctor(os.path.join(data, "pass"))
            self.assertRegex(out, rf"✓ redis 127.0.0.1:{redis.port}: Redis "
                                  r"\S+ answers in .*runs scripts")
            self.assertRegex(out, rf"✗ redis 127.0.0.1:{dead}: cannot "
                                  "connect")
            self.assertNotIn("expected_nodes", out)
            with open(os.path.join(data, "wrong"), "w") as f:
                f.write("nope\n")
            out = doctor(os.path.join(data, "wrong"))
            self.assertRegex(out, rf"✗ redis 127.0.0.1:{redis.port}: .*AUTH "
                                  "refused")
        finally:
            redis.cli("-a", "s3cret", "CONFIG", "SET", "requirepass", "")
            redis.stop()


if __name__ == "__main__":
    unittest.main()
