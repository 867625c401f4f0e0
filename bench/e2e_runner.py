#!/usr/bin/python3
"""The end-to-end benchmark suite: workloads an operator tunes Peregrine
with, each measured against its ceiling in the same run.

For a workload: NSD on loopback serves MX records for D domains pointing to
Postfix's smtp-sink; the load generator (smtp-source, in S concurrent
sessions) first sends straight into the sink (the ceiling), then into
Peregrine, which delivers to the sink. It prints progress every second and
writes DIR/result.json and DIR/throughput.png (gnuplot).

  bazel run -c opt //bench:e2e -- --workload W1-20 --out /tmp/w1
  bazel run -c opt //bench:e2e -- --workload W3 --messages 200000 --out /tmp/w3
  bazel run -c opt //bench:e2e -- --sweep --out /tmp/sweep

Workloads (--messages, --sessions, --size, --domains override):
  W1-20   20,000 x 10 KiB, 100 domains, 20 sessions, built-in defaults
  W1-100  the same with 100 sessions
  W2      W1-20, every message DKIM-signed (rsa-2048; --dkim ed25519)
  W3      1,000,000 x 1 KiB, 50 sessions, injected while delivery is held
          (every site suspended), then released with SIGHUP
  W4      5,000 x 100 KB, 20 sessions
--tls-policies off runs the daemon without MTA-STS look-ups and DNSSEC
(DANE), to compare with the defaults (on).
result.json: e2e msgs/s, ceiling msgs/s, ratio, daemon CPU-s per 1,000
messages (user, system), delivery latency from acceptance to the remote 250
(p50/p90/p99/max, from the event log), peak RSS, bytes and write calls to
storage (/proc/PID/io), injection msgs/s, and the samples behind the plot.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

runfiles = os.environ.get("RUNFILES_DIR")
if runfiles:
    os.chdir(os.path.join(runfiles, "peregrine"))
sys.path.insert(0, "tests/e2e")
sys.path.insert(0, "bench/delivery")
from e2e_lib import Daemon, Nsd  # noqa: E402
from delivery_bench import CountingSink  # noqa: E402

WORKLOADS = {
    "W1-20": dict(messages=20000, size=10 * 1024, domains=100, sessions=20),
    "W1-100": dict(messages=20000, size=10 * 1024, domains=100, sessions=100),
    "W2": dict(messages=20000, size=10 * 1024, domains=100, sessions=20,
               dkim="rsa"),
    "W3": dict(messages=1000000, size=1024, domains=100, sessions=50,
               held=True),
    "W4": dict(messages=5000, size=100 * 1000, domains=100, sessions=20),
}


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks  # user, system


def proc_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


LOADGEN = "bench/loadgen/loadgen"
SINK = "bench/sink/sink"


class PeregrineSink:
    """bench/sink: counts from its --stats file; `mix` as its --mix."""

    def __init__(self, mix="", chunking=True):
        import tempfile
        from e2e_lib import free_port
        self.port = free_port()
        self.stats = tempfile.NamedTemporaryFile(delete=False).name
        os.unlink(self.stats)
        self.proc = subprocess.Popen(
            [SINK, "--listen", f"127.0.0.1:{self.port}", "--stats",
             self.stats, "--mix", mix, "--threads", "1"] +
            ([] if chunking else ["--no-chunking"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline and not os.path.exists(self.stats):
            time.sleep(0.05)

    def count(self):
        try:
            with open(self.stats) as f:
                return json.load(f)["messages"]
        except (OSError, ValueError):
            return 0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        if os.path.exists(self.stats):
            os.unlink(self.stats)


def lanes(port, domains, per_domain, size, sessions, generator="loadgen",
          report=None):
    """The load: with `loadgen` (bench/loadgen, the default) one process of
    `sessions` concurrent sessions, at most 100 messages per connection,
    writing its acknowledgement latencies to `report`; with `smtp-source`
    (Postfix's), `sessions` lanes each sending to its domains one after
    another."""
    if generator == "loadgen" and os.path.exists(LOADGEN):
        return [subprocess.Popen(
            [LOADGEN, "--to", f"127.0.0.1:{port}", "--sessions",
             str(sessions), "--messages", str(per_domain * domains),
             "--size", str(size), "--domains", str(domains),
             "--sender", "bench@src.test"] +
            (["--json", report] if report else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    def source(i):
        return (f"/usr/sbin/smtp-source -s 1 -m {per_domain} -l {size} "
                f"-f bench@src.test -t user@d{i}.test 127.0.0.1:{port}")
    sessions = max(1, min(sessions, domains))
    return [subprocess.Popen(
        ["sh", "-c", " && ".join(source(i) for i in
                                 range(lane, domains, sessions))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for lane in range(sessions)]


def watch(label, count, total, procs=(), deadline=None, samples=None,
          t0=None):
    """Prints progress each second until `count()` reaches `total` (and
    the generator is done); returns the seconds it took."""
    t0 = t0 or time.time()
    last = -1
    while True:
        n = count()
        now = time.time()
        if samples is not None:
            samples.append((round(now - t0, 2), n))
        if int(now - t0) != last:
            last = int(now - t0)
            rate = n / max(now - t0, 1e-9)
            print(f"  {label}: {n}/{total} at {now - t0:5.1f} s "
                  f"({rate:,.0f} msgs/s)", flush=True)
        if n >= total and all(p.poll() is not None for p in procs):
            return now - t0
        if deadline and now > deadline:
            raise SystemExit(f"{label}: only {n} of {total} in time")
        time.sleep(0.25)


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def dkim_config(data, kind):
    sel = "bench"
    key = os.path.join(data, "bench.key")
    from e2e_lib import PEREGRINE
    subprocess.run([PEREGRINE,
                    "dkim", "keygen", "--domain", "src.test", "--selector",
                    sel, "--type", "ed25519" if kind == "ed25519"
                    else "rsa", "--out", key],
                   check=True, capture_output=True)
    return (f'[[dkim.keys]]\ndomain = "src.test"\nselector = "{sel}"\n'
            f'key_file = "{key}"\n')


def run(w, out_dir, args):
    domains, sessions = w["domains"], w["sessions"]
    per_domain = max(1, w["messages"] // domains)
    total = per_domain * domains
    zones = {f"d{i}.test": [f"@ IN MX 10 mx{i % 10}.sinks.test."]
             for i in range(domains)}
    zones["sinks.test"] = [f"mx{i} IN A 127.0.0.1" for i in range(10)]
    nsd = Nsd(zones)
    sink = (PeregrineSink(args.mix, not args.no_chunking)
            if args.sink == "peregrine" and os.path.exists(SINK)
            else CountingSink())
    d = None
    result = dict(workload=w["name"], messages=total, size=w["size"],
                  domains=domains, sessions=sessions)
    try:
        print(f"{w['name']}: {total} x {w['size']} bytes, {domains} domains, "
              f"{sessions} sessions", flush=True)
        samples_ceiling = []
        t0 = time.time()
        procs = lanes(sink.port, domains, per_domain, w["size"], sessions,
                      args.generator)
        ceiling_s = watch("ceiling", sink.count, total, procs,
                          time.time() + args.timeout, samples_ceiling, t0)
        result["ceiling_msgs_per_s"] = round(total / ceiling_s, 1)
        base = sink.count()

        data = os.path.join(out_dir, "data")
        shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data)
        # --tls-policies off: no MTA-STS look-ups and no DNSSEC (DANE), to
        # see what they cost.
        policies = args.tls_policies == "on"
        extra = (nsd.dns_config() +
                 ("" if policies else "dnssec = false\n") +
                 f"[delivery]\nport = {sink.port}\n" +
                 ("" if policies else "mta_sts = false\n") +
                 "[smtp]\nmax_connections_per_client = 1000\n"
                 '[queue]\nspool_reserve = "256MiB"\n'
                 f'durability = "{args.durability}"\n')
        if w.get("dkim"):
            extra += dkim_config(data, w["dkim"])
        if w.get("held"):
            extra += ('[[delivery.sites]]\nmx_suffixes = ["sinks.test"]\n'
                      'suspended = true\n')
        d = Daemon(extra, data=data, shards=args.shards,
                   server=(f'idle_spin = "{args.idle_spin}"'
                           if args.idle_spin else ""))
        pid = d.proc.pid
        u0, s0 = proc_stat(pid)
        io0 = proc_io(pid)
        samples = []
        t0 = time.time()
        report = os.path.join(out_dir, "loadgen.json")
        if os.path.exists(report):
            os.unlink(report)
        procs = lanes(d.port, domains, per_domain, w["size"], sessions,
                      args.generator, report)
        if w.get("held"):
            # Injection alone: count what the queue accepted.
            # Reads only what the log gained since the last look: reading
            # all of it four times a second costs CPU the daemon and the
            # generator share.
            seen = dict(offset=0, count=0, tail=b"")
            needle = b" received id="

            def accepted():
                with open(os.path.join(data, "daemon.log"), "rb") as f:
                    f.seek(seen["offset"])
                    chunk = f.read()
                seen["offset"] += len(chunk)
                text = seen["tail"] + chunk
                seen["count"] += text.count(needle)
                # Keep a partial needle for the next look, never a whole.
                seen["tail"] = text[-(len(needle) - 1):]
                return seen["count"]
            inject_s = watch("injected (delivery held)", accepted, total,
                             procs, time.time() + args.timeout, None, t0)
            result["inject_msgs_per_s"] = round(total / inject_s, 1)
            result["peak_rss_kib_held"] = peak_rss_kib(pid)
            result["rss_bytes_per_queued_recipient"] = round(
                peak_rss_kib(pid) * 1024 / total, 1)
            with open(d.cfg) as f:
                cfg = f.read()
            with open(d.cfg, "w") as f:
                f.write(cfg.replace("suspended = true", "suspended = false"))
            u0, s0 = proc_stat(pid)
            io0 = proc_io(pid)
            t0 = time.time()
            d.proc.send_signal(signal.SIGHUP)
        took = watch("delivered", lambda: sink.count() - base, total, procs,
                     time.time() + args.timeout, samples, t0)
        if not w.get("held"):
            result["inject_msgs_per_s"] = None
        u1, s1 = proc_stat(pid)
        io1 = proc_io(pid)
        result["peak_rss_kib"] = peak_rss_kib(pid)
        time.sleep(1)
        delivered = sink.count() - base
        d.stop()
        events = d.events()
        latency = [e["queue_time_ms"] for e in events
                   if e["type"] == "delivered"]
        for p in procs:
            p.wait()
        if os.path.exists(report):
            with open(report) as f:
                injected = json.load(f)
            result["ack_latency_ms"] = injected["ack_latency_ms"]
            result["inject_msgs_per_s_loadgen"] = injected["msgs_per_s"]
        result["generator"] = args.generator
        result["tls_policies"] = args.tls_policies
        result["sink"] = args.sink
        result.update({
            "e2e_msgs_per_s": round(total / took, 1),
            "ratio": round(total / took / result["ceiling_msgs_per_s"], 3),
            "daemon_cpu_s_per_1000": round((u1 - u0 + s1 - s0) * 1000 / total,
                                           4),
            "daemon_user_s_per_1000": round((u1 - u0) * 1000 / total, 4),
            "daemon_system_s_per_1000": round((s1 - s0) * 1000 / total, 4),
            "delivery_latency_ms": {
                "p50": percentile(latency, 50), "p90": percentile(latency, 90),
                "p99": percentile(latency, 99),
                "max": max(latency) if latency else None},
            "bytes_written": io1.get("write_bytes", 0) -
            io0.get("write_bytes", 0),
            "write_calls": io1.get("syscw", 0) - io0.get("syscw", 0),
            "delivered": delivered,
            "exactly_once": delivered == total and len(latency) == total and
            len({e["id"] for e in events if e["type"] == "delivered"}) ==
            total,
            "samples": {"ceiling": samples_ceiling, "peregrine": samples},
        })
        return result
    finally:
        if d is not None and d.proc.poll() is None:
            d.stop()
        sink.stop()
        nsd.stop()


def plot(out_dir, results):
    """throughput.png: messages delivered over time, ceiling and Peregrine,
    for each run (gnuplot from Debian; skipped with a word if missing)."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("gnuplot not found: no PNG (scripts/install-deps.sh installs "
              "gnuplot-nox)")
        return
    series = []
    for i, r in enumerate(results):
        for kind in ("ceiling", "peregrine"):
            path = os.path.join(out_dir, f"samples-{i}-{kind}.dat")
            with open(path, "w") as f:
                prev = None
                for t, n in r["samples"][kind]:
                    if prev is not None and t > prev[0]:
                        f.write(f"{t} {(n - prev[1]) / (t - prev[0]):.1f}\n")
                    prev = (t, n)
            series.append((path, f"{r['label']} {kind}"))
    script = (f"set terminal pngcairo size 1000,600\n"
              f"set output '{os.path.join(out_dir, 'throughput.png')}'\n"
              "set xlabel 'seconds'\nset ylabel 'messages/s'\n"
              "set key outside\nset grid\nplot " +
              ", ".join(f"'{p}' using 1:2 with lines title '{t}'"
                        for p, t in series) + "\n")
    r = subprocess.run([gnuplot], input=script, text=True,
                       capture_output=True)
    if r.returncode != 0:
        # pngcairo may be missing: the plain png terminal then.
        r = subprocess.run([gnuplot], input=script.replace("pngcairo", "png"),
                           text=True, capture_output=True)
    print(f"plot: {os.path.join(out_dir, 'throughput.png')}"
          if r.returncode == 0 else f"gnuplot failed: {r.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="W1-20", choices=sorted(WORKLOADS))
    # Under `bazel test` (the smoke run) the test's own temporary folder.
    ap.add_argument("--out", default=os.path.join(
        os.environ.get("TEST_TMPDIR", "/tmp"), "peregrine-bench"))
    ap.add_argument("--messages", type=int)
    ap.add_argument("--sessions", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--domains", type=int)
    ap.add_argument("--dkim", choices=["rsa", "ed25519"])
    ap.add_argument("--shards", type=int, default=0,
                    help="daemon shards (0: one per core)")
    ap.add_argument("--durability", default="fsync",
                    choices=["fsync", "none"])
    ap.add_argument("--idle-spin", default=None)
    ap.add_argument("--tls-policies", default="on", choices=["on", "off"],
                    help="MTA-STS and DANE look-ups (the defaults), or "
                    "neither")
    ap.add_argument("--sink", default="peregrine",
                    choices=["peregrine", "smtp-sink"],
                    help="bench/sink (counts per domain, --mix) or "
                    "Postfix's smtp-sink")
    ap.add_argument("--mix", default="",
                    help="bench/sink's reply mix, e.g. "
                    "'d1.test=5xx:0.1,4xx:0.2;default=delay:1ms'")
    ap.add_argument("--no-chunking", action="store_true",
                    help="bench/sink does not offer CHUNKING: Peregrine "
                    "delivers with DATA instead of BDAT")
    ap.add_argument("--generator", default="loadgen",
                    choices=["loadgen", "smtp-source"],
                    help="bench/loadgen (reports acknowledgement latency) "
                    "or Postfix's smtp-source")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--sweep", action="store_true",
                    help="shards x sessions x size x durability, 5,000 "
                    "messages each: one table, one plot")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    runs = []
    if args.sweep:
        for shards in (1, 2):
            for sessions in (20, 100):
                for size in (1024, 10 * 1024):
                    for durability in ("fsync", "none"):
                        w = dict(WORKLOADS["W1-20"], messages=5000,
                                 sessions=sessions, size=size)
                        a = argparse.Namespace(**vars(args))
                        a.shards, a.durability = shards, durability
                        runs.append((w, a, f"{shards}sh/{sessions}s/"
                                     f"{size // 1024}KiB/{durability}"))
    else:
        w = dict(WORKLOADS[args.workload])
        for k in ("messages", "sessions", "size", "domains", "dkim"):
            if getattr(args, k) is not None:
                w[k] = getattr(args, k)
        runs.append((w, args, args.workload))
    results = []
    for w, a, label in runs:
        w = dict(w, name=label)
        r = run(w, args.out, a)
        r["label"] = label
        r["shards"] = a.shards or os.cpu_count()
        r["durability"] = a.durability
        results.append(r)
        print(f"{label}: {r['e2e_msgs_per_s']:,.0f} msgs/s against a "
              f"ceiling of {r['ceiling_msgs_per_s']:,.0f} (ratio "
              f"{r['ratio']:.2f}); daemon {r['daemon_cpu_s_per_1000']:.3f} "
              f"CPU-s per 1,000 ({r['daemon_user_s_per_1000']:.3f} user, "
              f"{r['daemon_system_s_per_1000']:.3f} system); latency p50 "
              f"{r['delivery_latency_ms']['p50']} ms, p99 "
              f"{r['delivery_latency_ms']['p99']} ms; acknowledgement p99 "
              f"{(r.get('ack_latency_ms') or {}).get('p99')} ms; peak RSS "
              f"{r['peak_rss_kib'] / 1024:.0f} MiB; exactly once: "
              f"{'yes' if r['exactly_once'] else 'NO'}", flush=True)
    if len(results) > 1:
        print(f"\n{'run':<28} {'msgs/s':>9} {'ceiling':>9} {'ratio':>6} "
              f"{'CPU-s/1k':>9}")
        for r in results:
            print(f"{r['label']:<28} {r['e2e_msgs_per_s']:>9,.0f} "
                  f"{r['ceiling_msgs_per_s']:>9,.0f} {r['ratio']:>6.2f} "
                  f"{r['daemon_cpu_s_per_1000']:>9.3f}")
    path = os.path.join(args.out, "result.json")
    with open(path, "w") as f:
        json.dump(results[0] if len(results) == 1 else results, f, indent=2)
    print(f"result: {path}")
    plot(args.out, results)
    return 0 if all(r["exactly_once"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
