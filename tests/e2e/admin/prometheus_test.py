#!/usr/bin/env python3
"""A real Prometheus server (Debian's), started on loopback by the test,
scrapes the daemon's /metrics every second: the target is up with no scrape
error, and a message received shows in a query."""
import json
import os
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, "tests/e2e")
from e2e_lib import TMP, Daemon, free_port  # noqa: E402


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class PrometheusTest(unittest.TestCase):
    def test_prometheus_scrapes_the_admin_port(self):
        admin = free_port()
        d = Daemon(admin=f'"127.0.0.1:{admin}"')
        web = free_port()
        work = tempfile.mkdtemp(dir=TMP)
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: peregrine
    static_configs:
      - targets: ["127.0.0.1:{admin}"]
""")
        log = open(os.path.join(work, "prometheus.log"), "w")
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(work, 'data')}",
             f"--web.listen-address=127.0.0.1:{web}"],
            stdout=log, stderr=log)
        base = f"http://127.0.0.1:{web}"
        try:
            with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
                s.sendmail("a@src.test", ["b@dest.test"],
                           "Subject: x\r\n\r\nbody\r\n")
            value = None
            target = None
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    targets = get(base + "/api/v1/targets")["data"]
                    active = targets["activeTargets"]
                    if active and active[0]["health"] == "up":
                        target = active[0]
                        r = get(base + "/api/v1/query?query="
                                "sum(peregrine_messages_received_total)")
                        result = r["data"]["result"]
                        if result:
                            value = float(result[0]["value"][1])
                            break
                except OSError:
                    pass
                time.sleep(0.5)
            with open(os.path.join(work, "prometheus.log")) as f:
                plog = f.read()
            self.assertIsNotNone(target, plog[-3000:])
            self.assertEqual(target["lastError"], "")
            self.assertEqual(value, 1.0)
            up = get(base + "/api/v1/query?query=up")["data"]["result"]
            self.assertEqual(up[0]["value"][1], "1")
        finally:
            prom.terminate()
            prom.wait(timeout=20)
            log.close()
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
