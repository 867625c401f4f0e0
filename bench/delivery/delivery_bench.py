#!/usr/bin/python3
"""End-to-end delivery benchmark on loopback.

N messages of SIZE bytes, one recipient each, over D domains whose MX
records (served by NSD on loopback) point to Postfix's smtp-sink. The
same load generator (smtp-source, one process and session per domain)
first sends straight into the sink: the ceiling. Then it injects into
Peregrine, which delivers to the sink; the rate is counted from the first
injection to the last delivery, and the daemon's CPU seconds are read from
/proc. Every message must arrive exactly once.

  bazel run -c opt //bench/delivery:delivery_bench            # 20,000 x 10 KiB
  bazel run -c opt //bench/delivery:delivery_bench -- --messages 2000

Prints a line per figure and "delivery/ceiling ratio"; exits 1 when a
message is missing or duplicated.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

# Under `bazel run` the runfiles tree is the working directory.
runfiles = os.environ.get("RUNFILES_DIR")
if runfiles:
    os.chdir(os.path.join(runfiles, "peregrine"))
sys.path.insert(0, "tests/e2e")
from e2e_lib import TERMINAL, Daemon, Nsd, free_port  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


class CountingSink:
    """smtp-sink with its running counter (-c) read from its output."""

    def __init__(self):
        self.port = free_port()
        self.out = tempfile.NamedTemporaryFile(delete=False)
        args = ["/usr/sbin/smtp-sink", "-c", "-m", "1000"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(
            args + [f"127.0.0.1:{self.port}", "1024"],
            stdout=self.out, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def count(self):
        with open(self.out.name, "rb") as f:
            f.seek(max(0, os.path.getsize(self.out.name) - 64))
            tail = f.read().decode(errors="replace")
        numbers = re.findall(r"(\d+)", tail)
        return int(numbers[-1]) if numbers else 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        os.unlink(self.out.name)


def generate(port, domains, per_domain, size, sessions=0):
    """One smtp-source per domain, all at once; returns when all are done.
    With `sessions` (fewer than domains): that many lanes at once, each
    sending to its share of the domains one after another (one session at a
    time, at most 100 messages per connection), as W1-20 does."""
    def source(i):
        return ["/usr/sbin/smtp-source", "-s", "1", "-m", str(per_domain),
                "-l", str(size), "-f", "bench@src.test",
                "-t", f"user@d{i}.test", f"127.0.0.1:{port}"]
    if not sessions or sessions >= domains:
        procs = [subprocess.Popen(source(i), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for i in range(domains)]
    else:
        lanes = [" && ".join(" ".join(source(i)) for i in
                             range(lane, domains, sessions))
                 for lane in range(sessions)]
        procs = [subprocess.Popen(["sh", "-c", lane],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for lane in lanes]
    failed = sum(p.wait() != 0 for p in procs)
    if failed:
        raise SystemExit(f"{failed} smtp-source processes failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--size", type=int, default=10 * 1024)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--sessions", type=int, default=0,
                    help="concurrent injecting sessions (default: one per "
                    "domain); 20 is the W1-20 shape")
    ap.add_argument("--shared-mx", action="store_true",
                    help="every domain's MX is one host (one site)")
    ap.add_argument("--idle-spin", default=None,
                    help="server.idle_spin (\"0s\": CPU counts work only, "
                    "not the shards' spinning while idle)")
    ap.add_argument("--no-events", action="store_true",
                    help="no [events] section (an older build has none)")
    ap.add_argument("--keep-finished", default=None,
                    help="queue.keep_finished (default: the daemon's)")
    args = ap.parse_args()
    per_domain = args.messages // args.domains
    total = per_domain * args.domains

    if args.shared_mx:
        zones = {f"d{i}.test": ["@ IN MX 10 mx.shared.test."]
                 for i in range(args.domains)}
        zones["shared.test"] = ["mx IN A 127.0.0.1"]
    else:
        zones = {f"d{i}.test": ["@ IN MX 10 mx.d%d.test." % i,
                                "mx IN A 127.0.0.1"]
                 for i in range(args.domains)}
    nsd = Nsd(zones)
    sink = CountingSink()
    d = None
    try:
        # The ceiling: the generator straight into the sink.
        start = time.time()
        generate(sink.port, args.domains, per_domain, args.size,
                 args.sessions)
        deadline = time.time() + 30
        while sink.count() < total and time.time() < deadline:
            time.sleep(0.01)
        ceiling_s = time.time() - start
        ceiling = total / ceiling_s
        base = sink.count()

        # The daemon's default spool reserve (the test library sets none).
        d = Daemon(nsd.dns_config() + f"[delivery]\nport = {sink.port}\n"
                   "[smtp]\nmax_connections_per_client = 1000\n"
                   '[queue]\nspool_reserve = "256MiB"\n' +
                   (f'keep_finished = "{args.keep_finished}"\n'
                    if args.keep_finished is not None else ""),
                   events=not args.no_events,
                   server=(f'idle_spin = "{args.idle_spin}"'
                           if args.idle_spin is not None else ""))
        cpu0 = cpu_seconds(d.proc.pid)
        start = time.time()
        generate(d.port, args.domains, per_domain, args.size, args.sessions)
        injected_s = time.time() - start
        deadline = time.time() + args.timeout
        while sink.count() - base < total and time.time() < deadline:
            time.sleep(0.05)
        took = time.time() - start
        cpu = cpu_seconds(d.proc.pid) - cpu0
        time.sleep(1)  # Anything extra would show now.
        delivered = sink.count() - base
        d.stop()
        with open(os.path.join(d.data, "daemon.log")) as f:
            log = f.read()
        ids = re.findall(r"delivered id=(\w+) ", log)
        leftover = d.queue("list").strip()

        print(f"messages: {total} x {args.size} bytes over {args.domains} "
              f"domains" + (" sharing one MX host" if args.shared_mx else ""))
        print(f"ceiling (smtp-source -> smtp-sink): {ceiling:.0f} msgs/s "
              f"({ceiling_s:.2f} s)")
        print(f"peregrine (smtp-source -> peregrine -> smtp-sink): "
              f"{total / took:.0f} msgs/s ({took:.2f} s; injection took "
              f"{injected_s:.2f} s)")
        print(f"delivery/ceiling ratio: {total / took / ceiling:.2f} "
              f"(target >= 0.50)")
        print(f"daemon CPU: {cpu:.2f} s = {cpu * 1000 / total:.3f} "
              f"CPU-s per 1000 messages (target <= 0.25)")
        ok = delivered == total and len(ids) == total and \
            len(set(ids)) == total and not leftover
        print(f"arrived at the sink: {delivered}; delivered log lines: "
              f"{len(ids)} ({len(set(ids))} distinct); left in queue: "
              f"{len(leftover.splitlines())}")
        print("exactly once: " + ("yes" if ok else "NO"))
        if not args.no_events:
            # stop() checked every line parses and no recipient has two
            # terminal events; here: all of them, each with its reply.
            events = d.events()
            received = {e["id"] for e in events if e["type"] == "received"}
            final = [e for e in events if e["type"] in TERMINAL]
            structured = all(isinstance(e["code"], int) and
                             e["reply"] is not None for e in final)
            events_ok = len(received) == total and len(final) == total and \
                len({(e["id"], e["recipient"]) for e in final}) == total and \
                structured
            print(f"event log: {len(events)} lines, {len(received)} messages "
                  f"received, {len(final)} terminal events, replies "
                  f"structured: {'yes' if structured else 'NO'}")
            ok = ok and events_ok
        return 0 if ok else 1
    finally:
        if d is not None and d.proc.poll() is None:
            d.stop()
        sink.stop()
        nsd.stop()


if __name__ == "__main__":
    sys.exit(main())
