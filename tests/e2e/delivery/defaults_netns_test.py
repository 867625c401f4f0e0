#!/usr/bin/python3
"""Delivery on the built-in defaults, as an operator runs it.

In a network namespace and mount namespace of its own (so nothing can leave
the machine and /etc/resolv.conf can be replaced): NSD answers on
127.0.0.1:53 and is the only nameserver in resolv.conf; ten domains have MX
hosts on 127.0.0.2 .. 127.0.0.4 where smtp-sink listens on port 25; the
daemon runs with no configuration file at all (relay on 127.0.0.1:2525,
delivery by MX on port 25, DNS from resolv.conf); smtp-source injects.
Every message must arrive exactly once and the queue must end empty.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, "tests/e2e")
from e2e_lib import PEREGRINE, TMP, Nsd, enter_network_namespace  # noqa: E402

DOMAINS = 10
PER_DOMAIN = 30
SINKS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def in_namespace():
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = tempfile.mkdtemp(dir=TMP)
    zones = {f"d{i}.test": [f"@ IN MX 10 mx.d{i}.test.",
                            f"mx IN A {SINKS[i % len(SINKS)]}"]
             for i in range(DOMAINS)}
    nsd = Nsd(zones, port=53)
    resolv = os.path.join(work, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)
    sinks = []
    counters = []
    for address in SINKS:
        out = open(os.path.join(work, f"sink-{address}.out"), "w+")
        counters.append(out)
        sinks.append(subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-c", "-u", "root", f"{address}:25",
             "256"], stdout=out, stderr=subprocess.DEVNULL))
    data = os.path.join(work, "data")
    log = open(os.path.join(work, "daemon.log"), "w+")
    daemon = subprocess.Popen([PEREGRINE, "serve", "--data-dir", data],
                              stderr=log, stdout=subprocess.DEVNULL)

    def arrived():
        total = 0
        for out in counters:
            out.flush()
            with open(out.name) as f:
                numbers = re.findall(r"\d+", f.read())
            total += int(numbers[-1]) if numbers else 0
        return total

    try:
        deadline = time.time() + 15
        while "listening on 127.0.0.1:2525" not in open(log.name).read():
            assert time.time() < deadline, "daemon did not start"
            time.sleep(0.05)
        gens = [subprocess.Popen(
            ["/usr/sbin/smtp-source", "-s", "2", "-m", str(PER_DOMAIN),
             "-l", "2048", "-f", "app@src.test", "-t", f"user@d{i}.test",
             "127.0.0.1:2525"]) for i in range(DOMAINS)]
        assert all(g.wait(timeout=60) == 0 for g in gens), "smtp-source failed"
        total = DOMAINS * PER_DOMAIN
        deadline = time.time() + 60
        while arrived() < total and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # Duplicates would show now.
        got = arrived()
        daemon.send_signal(15)
        assert daemon.wait(timeout=30) == 0, "drain did not exit 0"
        text = open(log.name).read()
        delivered = re.findall(r"delivered id=(\w+) ", text)
        listing = subprocess.run([PEREGRINE, "queue", "list", "--data-dir",
                                  data], capture_output=True, text=True)
        print(f"arrived {got} of {total}; delivered lines {len(delivered)} "
              f"({len(set(delivered))} distinct)")
        if got != total or len(set(delivered)) != total or \
                len(delivered) != total or listing.stdout.strip():
            print(text[-5000:])
            print(listing.stdout, listing.stderr)
            return 1
        assert "dns: servers of /etc/resolv.conf" in text
        print("defaults: all delivered exactly once; queue empty")
        return 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        for s in sinks:
            s.terminate()
            s.wait()
        nsd.stop()


if __name__ == "__main__":
    enter_network_namespace(__file__, mount=True)
    sys.exit(in_namespace())
