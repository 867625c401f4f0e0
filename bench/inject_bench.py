#!/usr/bin/python3
"""HTTP injection against SMTP injection, in one run, on one daemon.

The daemon queues durably (the built-in defaults) with delivery off, so
only injection is measured. First SMTP: bench/loadgen with --sessions
concurrent sessions sends --messages messages of --size bytes. Then HTTP:
--clients concurrent clients POST /api/v1/inject in batches of --batch
recipients, each a personalised message ({{ name }} and {{ code }} in the
subject and in a text body of --size bytes). It prints, for each, messages
per second, the daemon's CPU-s per 1,000 messages and (HTTP) the response
time per batch (p50/p99), and writes --out/result.json.

  bazel run -c opt //bench:inject -- --messages 20000 --out /tmp/inject
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import threading
import time

runfiles = os.environ.get("RUNFILES_DIR")
if runfiles:
    os.chdir(os.path.join(runfiles, "peregrine"))
sys.path.insert(0, "tests/e2e")
from e2e_lib import Daemon, free_port  # noqa: E402

LOADGEN = "bench/loadgen/loadgen"


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def queued(d):
    with open(os.path.join(d.data, "daemon.log"), "rb") as f:
        return f.read().count(b" received id=")


def smtp_phase(d, args):
    before = cpu(d.proc.pid)
    t0 = time.time()
    subprocess.run(
        [LOADGEN, "--to", f"127.0.0.1:{d.port}", "--sessions",
         str(args.sessions), "--messages", str(args.messages), "--size",
         str(args.size), "--domains", "100", "--sender", "bench@src.test"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.time() - t0
    used = cpu(d.proc.pid) - before
    return dict(msgs_per_s=round(args.messages / took, 1),
                cpu_s_per_1000=round(used / args.messages * 1000, 4),
                seconds=round(took, 2))


def http_phase(d, admin, args):
    text = ("Dear {{ name }}, your code is {{ code }}.\n" +
            ("x" * 71 + "\n") * max(1, args.size // 72))
    batches = [list(range(start, min(start + args.batch, args.messages)))
               for start in range(0, args.messages, args.batch)]
    times, failed = [], []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=300)
        while True:
            with lock:
                if not batches:
                    break
                batch = batches.pop()
            body = json.dumps({
                "envelope_sender": "bench@src.test",
                "campaign": "bench",
                "content": {"from": {"email": "bench@src.test"},
                            "subject": "Hello {{ name }} ({{ code }})",
                            "text_body": text},
                "recipients": [{"email": f"user{i}@d{i % 100}.test",
                                "name": f"User {i}",
                                "substitutions": {"code": f"C{i:07d}"}}
                               for i in batch]})
            t = time.time()
            conn.request("POST", "/api/v1/inject", body=body)
            r = conn.getresponse()
            reply = json.loads(r.read())
            with lock:
                times.append(time.time() - t)
                if r.status != 200 or reply["fail_count"]:
                    failed.append(reply)
        conn.close()

    before = cpu(d.proc.pid)
    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.time() - t0
    used = cpu(d.proc.pid) - before
    if failed:
        raise SystemExit(f"HTTP injection failed: {failed[:2]}")
    return dict(msgs_per_s=round(args.messages / took, 1),
                cpu_s_per_1000=round(used / args.messages * 1000, 4),
                seconds=round(took, 2),
                batch_ms_p50=round(percentile(times, 50) * 1000, 1),
                batch_ms_p99=round(percentile(times, 99) * 1000, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=10 * 1024)
    p.add_argument("--sessions", type=int, default=50)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--out", default=os.environ.get("TEST_TMPDIR", "/tmp"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    admin = free_port()
    d = Daemon("[smtp]\nmax_connections_per_client = 1000\n", events=False,
               admin=f'"127.0.0.1:{admin}"')
    try:
        print(f"SMTP: {args.messages} x {args.size} bytes, {args.sessions} "
              "sessions", flush=True)
        smtp = smtp_phase(d, args)
        print(f"  {smtp}", flush=True)
        print(f"HTTP: {args.messages} in batches of {args.batch}, "
              f"{args.clients} clients", flush=True)
        web = http_phase(d, admin, args)
        print(f"  {web}", flush=True)
        total = queued(d)
        if total != 2 * args.messages:
            raise SystemExit(f"queued {total}, expected {2 * args.messages}")
    finally:
        d.stop()
    result = dict(messages=args.messages, size=args.size, smtp=smtp,
                  http=web, ratio=round(web["msgs_per_s"] /
                                        smtp["msgs_per_s"], 2))
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"HTTP {web['msgs_per_s']:,.0f} msgs/s "
          f"({web['cpu_s_per_1000']} CPU-s per 1,000; batch p50 "
          f"{web['batch_ms_p50']} ms, p99 {web['batch_ms_p99']} ms) against "
          f"SMTP {smtp['msgs_per_s']:,.0f} msgs/s "
          f"({smtp['cpu_s_per_1000']}): {result['ratio']}x")


if __name__ == "__main__":
    main()
