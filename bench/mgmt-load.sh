#!/usr/bin/env bash
# Tunnel throughput of Bulwark with and without 20 concurrent management clients (see bench/mgmt-load.md).
#   bench/mgmt-load.sh [--pairs N] [--secs S] [--no-build]
# One Bulwark server (release build) and one stock OpenVPN 2.6 client in two network namespaces created
# here and removed on exit (also on failure). Interleaved per pair: (Q) iperf3 through the tunnel with no
# management client, (L) the same with 20 management clients on the unix socket: one never reads (it asks
# for `log on all`, `state on`, `bytecount 1` and many `status 3`), one streams `log on all` + `bytecount 1`,
# 18 poll `status 3` every 50 ms. Reports throughput per direction, the ratio L/Q, and the status polls
# answered per second during L.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PAIRS=3; SECS=8
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --no-build) NOBUILD=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench needs root (network namespaces, TUN)" >&2; exit 1; }
for t in openvpn iperf3 ip python3; do command -v "$t" >/dev/null || { echo "missing $t (apt-get install openvpn iperf3 iproute2 python3)" >&2; exit 1; }; done
[ -n "${NOBUILD:-}" ] || cargo build --release --bins >/dev/null
BW="$PWD/target/release/bulwark"
WORK=$(mktemp -d /tmp/bulwark-mgmtbench.XXXXXX)
S="bwm-s-$$"; C="bwm-c-$$"
SRV_PID=""; CLI_PID=""
. bench/lib.sh
cleanup() {
    for p in $SRV_PID $CLI_PID; do kill "$p" 2>/dev/null || true; done
    bench_netns_down
}
trap cleanup EXIT
bench_netns_up 51
bench_pki 51
SOCK="$WORK/mgmt.sock"
cat >> "$WORK/pki/server.conf" <<EOF
management $SOCK unix
management-max-clients 32
EOF
ip netns exec "$S" "$BW" --config "$WORK/pki/server.conf" > "$WORK/server.log" 2>&1 &
SRV_PID=$!
sleep 1.5
ip netns exec "$C" openvpn --config "$WORK/pki/clients/client1.ovpn" > "$WORK/client.log" 2>&1 &
CLI_PID=$!
for _ in $(seq 1 30); do ip netns exec "$C" ping -c1 -W1 10.8.0.1 >/dev/null 2>&1 && break; sleep 0.5; done
ip netns exec "$S" iperf3 -s -D -p 5201 >/dev/null 2>&1; sleep 0.5

# The management load: runs for $1 seconds, prints a JSON line with the polls answered.
cat > "$WORK/load.py" <<'PY'
import json, os, socket, sys, threading, time
sock, secs = sys.argv[1], float(sys.argv[2])
stop = time.time() + secs
answers = []; errors = []
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(5); return s
def stalled():
    s = conn()
    s.sendall(b"log on all\nstate on\nbytecount 1\n" + b"status 3\n" * 200)
    while time.time() < stop: time.sleep(0.2)   # never reads
def streamer():
    s = conn(); s.sendall(b"log on all\nbytecount 1\n"); s.settimeout(0.5)
    while time.time() < stop:
        try:
            if not s.recv(65536): break
        except socket.timeout: pass
def poller(i):
    s = conn(); buf = b""; n = 0
    while time.time() < stop:
        s.sendall(b"status 3\n")
        while b"\r\nEND\r\n" not in buf:
            d = s.recv(65536)
            if not d: errors.append(i); return
            buf += d
        buf = buf.split(b"\r\nEND\r\n", 1)[1]; n += 1
        time.sleep(0.05)
    answers.append(n)
ts = [threading.Thread(target=stalled), threading.Thread(target=streamer)] + \
     [threading.Thread(target=poller, args=(i,)) for i in range(18)]
for t in ts: t.daemon = True; t.start()
for t in ts[2:]: t.join(secs + 10)
cpu = sum(os.times()[:2])
print(json.dumps({"polls": sum(answers), "pollers_ok": len(answers), "poller_errors": len(errors),
                  "polls_per_s": sum(answers) / secs, "load_generator_cpu": cpu / secs}))
PY

proc_ticks() { # utime+stime of the processes in ns S whose comm is $1
    local tot=0
    for p in $(ip netns pids "$S"); do
        [ "$(cat /proc/$p/comm 2>/dev/null || true)" = "$1" ] && tot=$((tot + $(awk '{print $14+$15}' /proc/$p/stat)))
    done
    echo $tot
}
HZ=$(getconf CLK_TCK)
iperf() { # $1 = "" | -R ; prints Mbit/s received
    ip netns exec "$C" iperf3 -c 10.8.0.1 -t "$SECS" $1 -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6)'
}
RESULTS="$WORK/results.jsonl"
for i in $(seq 1 "$PAIRS"); do
    w0=$(proc_ticks bulwark-worker); m0=$(proc_ticks bulwark-mgmt); t0=$(date +%s.%N)
    up=$(iperf ""); down=$(iperf -R)
    w1=$(proc_ticks bulwark-worker); m1=$(proc_ticks bulwark-mgmt); t1=$(date +%s.%N)
    echo "{\"mode\":\"quiet\",\"up_mbps\":$up,\"down_mbps\":$down,\"worker_cpu\":$(python3 -c "print(($w1-$w0)/$HZ/($t1-$t0))"),\"broker_cpu\":$(python3 -c "print(($m1-$m0)/$HZ/($t1-$t0))")}" >> "$RESULTS"
    python3 "$WORK/load.py" "$SOCK" $((2 * SECS + 4)) > "$WORK/load-$i.json" &
    LP=$!
    sleep 2
    w0=$(proc_ticks bulwark-worker); m0=$(proc_ticks bulwark-mgmt); t0=$(date +%s.%N)
    up=$(iperf ""); down=$(iperf -R)
    w1=$(proc_ticks bulwark-worker); m1=$(proc_ticks bulwark-mgmt); t1=$(date +%s.%N)
    wait "$LP"
    echo "{\"mode\":\"loaded\",\"up_mbps\":$up,\"down_mbps\":$down,\"worker_cpu\":$(python3 -c "print(($w1-$w0)/$HZ/($t1-$t0))"),\"broker_cpu\":$(python3 -c "print(($m1-$m0)/$HZ/($t1-$t0))"),\"load\":$(cat "$WORK/load-$i.json")}" >> "$RESULTS"
    echo "pair $i done" >&2
done
kill -0 "$SRV_PID" || { echo "the daemon died during the benchmark" >&2; exit 1; }
DROPPED=$(grep -c "dropping slow management client" "$WORK/server.log" || true)
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="bench/results/mgmt-$STAMP"
python3 - "$RESULTS" "$OUT" "$PAIRS" "$SECS" "$DROPPED" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
out, pairs, secs, dropped = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
Q = [r for r in rows if r["mode"] == "quiet"]; L = [r for r in rows if r["mode"] == "loaded"]
summary = {}
for k in ["up_mbps", "down_mbps"]:
    ratios = [l[k] / q[k] for q, l in zip(Q, L)]
    summary[k] = {"quiet_median": statistics.median(q[k] for q in Q),
                  "loaded_median": statistics.median(l[k] for l in L),
                  "median_ratio_loaded_over_quiet": statistics.median(ratios),
                  "min": min(ratios), "max": max(ratios)}
summary["polls_per_s_median"] = statistics.median(l["load"]["polls_per_s"] for l in L)
for k in ["worker_cpu", "broker_cpu"]:
    summary[k] = {"quiet_median": statistics.median(q[k] for q in Q), "loaded_median": statistics.median(l[k] for l in L)}
summary["load_generator_cpu_median"] = statistics.median(l["load"]["load_generator_cpu"] for l in L)
summary["poller_errors"] = sum(l["load"]["poller_errors"] for l in L)
summary["slow_clients_dropped"] = dropped
json.dump({"pairs": pairs, "secs": secs, "runs": rows, "summary": summary}, open(out + ".json", "w"), indent=1)
md = ["| metric | quiet (median) | 20 mgmt clients (median) | loaded/quiet median | min | max |", "|---|---|---|---|---|---|"]
for k in ["up_mbps", "down_mbps"]:
    s = summary[k]
    md.append(f"| {k} | {s['quiet_median']:.1f} | {s['loaded_median']:.1f} | {s['median_ratio_loaded_over_quiet']:.3f} | {s['min']:.3f} | {s['max']:.3f} |")
for k in ["worker_cpu", "broker_cpu"]:
    s = summary[k]
    md.append(f"| {k} (cores) | {s['quiet_median']:.2f} | {s['loaded_median']:.2f} | | | |")
md.append("")
md.append(f"status 3 answers per second during the load (18 pollers): {summary['polls_per_s_median']:.1f} (median); "
          f"poller errors: {summary['poller_errors']}; stalled clients dropped by the broker: {dropped}; "
          f"CPU of the load generator itself (python, same 2 cores): {summary['load_generator_cpu_median']:.2f} cores")
open(out + ".md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
print("results:", out + ".{json,md}")
PY
