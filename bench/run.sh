#!/usr/bin/env bash
# Bulwark vs OpenVPN 2.6 data-plane benchmark, interleaved A B A B (see bench/README.md).
#   bench/run.sh [--pairs N] [--secs S] [--quick]
# A = /usr/sbin/openvpn as the server, B = Bulwark (release build); the same stock OpenVPN 2.6 client,
# certificates, port, `server 10.8.0.0 255.255.255.0`, `topology subnet`, tls-crypt, AES-256-GCM.
# Everything runs inside two network namespaces created here and removed on exit (also on failure).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PAIRS=5; SECS=10
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --quick) PAIRS=1; SECS=5; shift ;;
        --no-build) NOBUILD=1; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "bench needs root (network namespaces, TUN)" >&2; exit 1; }
for t in openvpn iperf3 ip python3; do command -v "$t" >/dev/null || { echo "missing $t (apt-get install openvpn iperf3 iproute2 python3)" >&2; exit 1; }; done
# --no-build: measure the binaries already in target/release (say so when reporting figures)
[ -n "${NOBUILD:-}" ] || cargo build --release --bins >/dev/null
BW="$PWD/target/release/bulwark"
WORK=$(mktemp -d /tmp/bulwark-bench.XXXXXX)
S="bwb-s-$$"; C="bwb-c-$$"
. bench/lib.sh
cleanup() {
    pkill -f "$WORK/" 2>/dev/null || true
    bench_netns_down
}
trap cleanup EXIT
bench_netns_up 50
# same server config for both
bench_pki 50
OFFLOAD=$(ip netns exec "$S" sh -c 'command -v ethtool >/dev/null && ethtool -k veth0 | grep -E "^(tx-checksumming|generic-segmentation-offload|generic-receive-offload|tcp-segmentation-offload):" | tr "\n" ";"' || echo "ethtool not installed")

cpu_ticks() { # sum utime+stime of the server processes in ns S (not iperf3)
    local tot=0
    for p in $(ip netns pids "$S"); do
        local comm; comm=$(cat /proc/$p/comm 2>/dev/null || true)
        case "$comm" in openvpn|bulwark|bulwark-worker|bulwark-mgmt)
            tot=$((tot + $(awk '{print $14+$15}' /proc/$p/stat))) ;;
        esac
    done
    echo $tot
}
tun_stat() { ip netns exec "$S" cat /sys/class/net/tun0/statistics/$1; }
server_pids() { # comma-separated pids of the server processes in ns S
    local out=""
    for p in $(ip netns pids "$S"); do
        case "$(cat /proc/$p/comm 2>/dev/null || true)" in openvpn|bulwark|bulwark-worker|bulwark-mgmt) out="$out${out:+,}$p" ;; esac
    done
    echo "$out"
}
sys_ticks() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat; }

run_one() { # $1 = A|B ; prints a JSON line
    local which=$1 srv
    if [ "$which" = A ]; then srv=(openvpn --config "$WORK/pki/server.conf"); else srv=("$BW" --config "$WORK/pki/server.conf"); fi
    ip netns exec "$S" "${srv[@]}" > "$WORK/server-$which.log" 2>&1 &
    sleep 1.5
    ip netns exec "$C" openvpn --config "$WORK/pki/clients/client1.ovpn" > "$WORK/client-$which.log" 2>&1 &
    for _ in $(seq 1 30); do ip netns exec "$C" ping -c1 -W1 10.8.0.1 >/dev/null 2>&1 && break; sleep 0.5; done
    ip netns exec "$S" iperf3 -s -D -p 5201 >/dev/null 2>&1; sleep 0.5
    local hz; hz=$(getconf CLK_TCK)
    local c0 b0 p0 s0; c0=$(cpu_ticks); b0=$(( $(tun_stat rx_bytes) + $(tun_stat tx_bytes) )); p0=$(( $(tun_stat rx_packets) + $(tun_stat tx_packets) )); s0=$(sys_ticks)
    # syscalls of the server processes (all threads) during both transfers: perf counting mode on the
    # raw_syscalls:sys_enter tracepoint (no per-event recording; overhead is a counter increment per syscall)
    local perfpid="" perfout="$WORK/perf-$which-$$-$RANDOM.csv"
    if command -v perf >/dev/null; then
        perf stat -x, -e raw_syscalls:sys_enter -p "$(server_pids)" -o "$perfout" >/dev/null 2>&1 &
        perfpid=$!
    fi
    local up down
    up=$(ip netns exec "$C" iperf3 -c 10.8.0.1 -t "$SECS" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    down=$(ip netns exec "$C" iperf3 -c 10.8.0.1 -t "$SECS" -R -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
    local c1 b1 p1 s1; c1=$(cpu_ticks); b1=$(( $(tun_stat rx_bytes) + $(tun_stat tx_bytes) )); p1=$(( $(tun_stat rx_packets) + $(tun_stat tx_packets) )); s1=$(sys_ticks)
    local sc=0
    if [ -n "$perfpid" ]; then
        kill -INT "$perfpid" 2>/dev/null || true; wait "$perfpid" 2>/dev/null || true
        sc=$(awk -F, '/raw_syscalls:sys_enter/{print $1+0}' "$perfout" 2>/dev/null | head -1); sc=${sc:-0}
    fi
    for p in $(ip netns pids "$C") $(ip netns pids "$S"); do kill "$p" 2>/dev/null || true; done
    sleep 1.5
    python3 - "$which" "$up" "$down" "$((c1-c0))" "$((b1-b0))" "$((p1-p0))" "$((s1-s0))" "$hz" "$sc" <<'PY'
import json,sys
w,up,down,cpu,byts,pk,sysd,hz,sc=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]),int(sys.argv[6]),int(sys.argv[7]),int(sys.argv[8]),int(sys.argv[9])
cpu_s=cpu/hz; gb=byts/1e9
print(json.dumps({"server":w,"up_mbps":up/1e6,"down_mbps":down/1e6,"server_cpu_s":cpu_s,
  "tun_gb":gb,"server_cpu_s_per_gb":cpu_s/gb if gb else None,"cpu_us_per_packet":cpu_s*1e6/pk if pk else None,
  "system_cpu_s_per_gb":(sysd/hz)/gb if gb else None,
  "syscalls_per_packet":sc/pk if (pk and sc) else None}))
PY
}

RESULTS="$WORK/results.jsonl"
for i in $(seq 1 "$PAIRS"); do
    run_one A >> "$RESULTS"
    run_one B >> "$RESULTS"
    echo "pair $i done" >&2
done
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="bench/results/$STAMP"
python3 - "$RESULTS" "$OUT" "$PAIRS" "$SECS" "$OFFLOAD" <<'PY'
import json,sys,statistics
rows=[json.loads(l) for l in open(sys.argv[1])]
out,pairs,secs,offload=sys.argv[2],sys.argv[3],sys.argv[4],sys.argv[5]
A=[r for r in rows if r["server"]=="A"]; B=[r for r in rows if r["server"]=="B"]
keys=["up_mbps","down_mbps","server_cpu_s_per_gb","cpu_us_per_packet","system_cpu_s_per_gb","syscalls_per_packet"]
summary={}
for k in keys:
    ratios=[b[k]/a[k] for a,b in zip(A,B) if a.get(k) and b.get(k)]
    if not ratios: continue
    summary[k]={"median_ratio_B_over_A":statistics.median(ratios),"min":min(ratios),"max":max(ratios),
                "A_median":statistics.median(a[k] for a in A if a.get(k)),"B_median":statistics.median(b[k] for b in B if b.get(k))}
doc={"pairs":int(pairs),"secs":int(secs),"veth_offload":offload,"runs":rows,"summary":summary,
     "not_measured":{"fixed_rate_udp":"not implemented yet","small_packet_fixed_pps":"not implemented yet","handshake_rate":"not implemented yet"}}
json.dump(doc,open(out+".json","w"),indent=1)
lines=["| metric | OpenVPN 2.6 (A, median) | Bulwark (B, median) | B/A median | min | max |","|---|---|---|---|---|---|"]
for k in keys:
    if k not in summary: lines.append(f"| {k} | not measured | | | | |"); continue
    s=summary[k]; lines.append(f"| {k} | {s['A_median']:.2f} | {s['B_median']:.2f} | {s['median_ratio_B_over_A']:.2f} | {s['min']:.2f} | {s['max']:.2f} |")
open(out+".md","w").write("\n".join(lines)+f"\n\n{pairs} interleaved pairs, {secs} s iperf3 each direction; veth: {offload}\n")
print("\n".join(lines))
PY
echo "results: $OUT.json $OUT.md"
