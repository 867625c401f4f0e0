#!/bin/bash
# The sink and the load generator against each other, briefly: plain and
# pipelined, with a mix of refusals, delays and disconnects; every message
# is accounted for on both sides and both exit cleanly (under ASan in the
# sanitizer pass: no leak, no use after free).
set -euo pipefail
sink=bench/sink/sink
loadgen=bench/loadgen/loadgen
work="${TEST_TMPDIR:-$(mktemp -d)}"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$sink" --listen "127.0.0.1:$port" --stats "$work/sink.json" \
  --mix 'd1.test=5xx:0.3;d2.test=4xx:0.5;d3.test=delay:5ms;d4.test=421:0.1' &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for i in $(seq 1 50); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done
"$loadgen" --to "127.0.0.1:$port" --sessions 8 --messages 3000 --size 2048 \
  --domains 10 --json "$work/plain.json"
"$loadgen" --to "127.0.0.1:$port" --sessions 8 --messages 3000 --size 2048 \
  --domains 10 --pipelining --recipients 2 --json "$work/pipelined.json"
kill -TERM $pid
wait $pid
trap - EXIT
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
sink = json.load(open(f"{w}/sink.json"))
total = 0
for name in ("plain", "pipelined"):
    r = json.load(open(f"{w}/{name}.json"))
    assert r["accepted"] + r["refused"] + r["interrupted"] == 3000, (name, r)
    assert r["accepted"] > 2000, (name, r)
    assert r["ack_latency_ms"]["p99"] > 0, (name, r)
    total += r["accepted"]
# The sink counted each accepted message (it may count one the generator
# lost to a disconnect after the data went out).
assert sink["messages"] >= total, (sink["messages"], total)
assert sink["refused"] > 0 and sink["per_domain"].get("d3.test", 0) > 0, sink
print(f"ok: {total} accepted, sink {sink['messages']}")
PY
