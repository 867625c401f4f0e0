#!/usr/bin/python3
"""Many nodes: a W1-like load through three Peregrine nodes on this
machine, with every site's limits shared through Redis (limits high
enough not to bind) and, alternately in the same run, the same three nodes
alone (no [redis]). NSD on loopback serves the MX records, bench/sink
takes the mail, bench/loadgen sends a third of the load to each node.

  bazel run -c opt //bench:cluster -- --out /tmp/cluster
  bazel run -c opt //bench:cluster -- --messages 60000 --rounds 3

Per round and mode it prints and writes to DIR/result.json: messages/s
end to end, the three daemons' CPU-s per 1,000 messages (user + system),
Redis's own CPU-s per 1,000, and the commands the nodes sent to Redis per
message (from the nodes' peregrine_redis_commands_total, and Redis's
INFO commandstats as a check; target <= 0.05: tokens reserved in
batches, not a round trip per message). Every message must arrive once.
"""
import argparse
import json
import os
import sys
import time
import urllib.request

runfiles = os.environ.get("RUNFILES_DIR")
if runfiles:
    os.chdir(os.path.join(runfiles, "peregrine"))
sys.path.insert(0, "bench")
sys.path.insert(0, "tests/e2e")
sys.path.insert(0, "tests/e2e/cluster")
from e2e_runner import PeregrineSink, lanes, proc_stat, watch  # noqa: E402
from e2e_lib import Daemon, Nsd, free_port  # noqa: E402
from cluster_lib import Redis  # noqa: E402

NODES = 3


def scrape(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def one(mode, args, nsd, out_dir, round_no):
    sink = PeregrineSink()
    redis = Redis() if mode == "redis" else None
    nodes = []
    try:
        per_node = args.messages // NODES // args.domains
        total = per_node * args.domains * NODES
        admins = [free_port() for _ in range(NODES)]
        for i in range(NODES):
            extra = (nsd.dns_config() + "dnssec = false\n"
                     f"[delivery]\nport = {sink.port}\nmta_sts = false\n"
                     f'message_rate = "{args.rate}"\n'
                     f'connection_rate = "{args.rate}"\n'
                     "[smtp]\nmax_connections_per_client = 1000\n"
                     '[queue]\nspool_reserve = "64MiB"\n')
            if redis is not None:
                extra = extra.replace("[delivery]\n",
                                      "[delivery]\nshared = true\n")
                extra += (f'[redis]\naddresses = ["127.0.0.1:{redis.port}"]\n'
                          f'node = "n{i}"\nexpected_nodes = {NODES}\n')
            data = os.path.join(out_dir, f"{mode}-{round_no}-n{i}")
            os.makedirs(data, exist_ok=True)
            nodes.append(Daemon(extra, data=data, shards=args.shards,
                                admin=f'"127.0.0.1:{admins[i]}"'))
        cpu0 = [sum(proc_stat(d.proc.pid)) for d in nodes]
        redis_cpu0 = sum(proc_stat(redis.proc.pid)) if redis else 0
        t0 = time.time()
        procs = []
        for d in nodes:
            procs += lanes(d.port, args.domains, per_node, args.size,
                           args.sessions // NODES or 1)
        took = watch(f"{mode} round {round_no}", sink.count, total, procs,
                     time.time() + args.timeout, None, t0)
        cpu = sum(sum(proc_stat(d.proc.pid)) for d in nodes) - sum(cpu0)
        result = dict(mode=mode, round=round_no, messages=total,
                      msgs_per_s=round(total / took, 1),
                      daemons_cpu_s_per_1000=round(cpu * 1000 / total, 4))
        if redis is not None:
            commands = sum(scrape(p, "peregrine_redis_commands_total")
                           for p in admins)
            result["redis_commands"] = int(commands)
            result["redis_commands_per_message"] = round(commands / total, 4)
            result["redis_commands_per_message_server"] = round(
                redis.commands() / total, 4)
            result["redis_cpu_s_per_1000"] = round(
                (sum(proc_stat(redis.proc.pid)) - redis_cpu0) * 1000 / total,
                4)
            result["redis_failures"] = int(sum(
                scrape(p, "peregrine_redis_failures_total") for p in admins))
        time.sleep(1)
        result["exactly_once"] = sink.count() == total
        for p in procs:
            p.wait()
        print("  " + json.dumps(result), flush=True)
        return result
    finally:
        for d in nodes:
            if d.proc.poll() is None:
                d.stop()
        if redis is not None:
            redis.stop()
        sink.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(
        os.environ.get("TEST_TMPDIR", "/tmp"), "cluster-bench"))
    ap.add_argument("--messages", type=int, default=30000)
    ap.add_argument("--size", type=int, default=10 * 1024)
    ap.add_argument("--domains", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=21,
                    help="in all, a third per node")
    ap.add_argument("--shards", type=int, default=1, help="per node")
    ap.add_argument("--rate", default="100000/s",
                    help="every site's message and connection rate")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    zones = {f"d{i}.test": [f"@ IN MX 10 mx{i % 10}.sinks.test."]
             for i in range(args.domains)}
    zones["sinks.test"] = [f"mx{i} IN A 127.0.0.1" for i in range(10)]
    nsd = Nsd(zones)
    results = []
    try:
        for r in range(args.rounds):
            for mode in ("alone", "redis"):
                results.append(one(mode, args, nsd, args.out, r))
    finally:
        nsd.stop()
    alone = [x["daemons_cpu_s_per_1000"] for x in results
             if x["mode"] == "alone"]
    shared = [x["daemons_cpu_s_per_1000"] for x in results
              if x["mode"] == "redis"]
    summary = dict(
        alone_cpu_s_per_1000=alone, redis_cpu_s_per_1000=shared,
        cpu_ratio_redis_over_alone=round(
            sum(shared) / max(sum(alone), 1e-9), 3),
        redis_commands_per_message=[x["redis_commands_per_message"]
                                    for x in results if x["mode"] == "redis"],
        exactly_once=all(x["exactly_once"] for x in results))
    print(json.dumps(summary), flush=True)
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(dict(runs=results, summary=summary), f, indent=1)
    if not summary["exactly_once"]:
        sys.exit("not every message arrived exactly once")


if __name__ == "__main__":
    main()
