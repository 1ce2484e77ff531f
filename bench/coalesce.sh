#!/usr/bin/env bash
# What interrupt moderation (`coalesce-usecs`) costs and gains, Bulwark alone (see bench/data-path.md).
#   bench/coalesce.sh [SECONDS] [USECS...]        default: 6 s, values 0 50
# For each value, interleaved twice (0 50 0 50 ...): a server with `coalesce-usecs V`, the stock client,
# then (1) ping RTT through the idle tunnel (100 pings, 10 ms apart), (2) iperf3 TCP upload and download
# for SECONDS each with the worker's CPU per GB, and (3) ping RTT during a third upload. Uses
# target/release as it is. Everything runs in two namespaces created here and removed on exit, also on
# failure. Output: one line per run and bench/results/coalesce-<UTC>.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${1:-6}; shift || true
VALUES=("$@"); [ ${#VALUES[@]} -gt 0 ] || VALUES=(0 50)
if ! [[ "$SECS" =~ ^[0-9]+$ ]] || [ "$SECS" -lt 1 ] || [ "$SECS" -gt 60 ]; then echo "SECONDS: 1-60" >&2; exit 2; fi
for v in "${VALUES[@]}"; do
    if ! [[ "$v" =~ ^[0-9]+$ ]] || [ "$v" -gt 1000 ]; then echo "USECS: 0-1000" >&2; exit 2; fi
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for t in openvpn iperf3 ip ping python3 timeout; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
BW="${CARGO_TARGET_DIR:-$PWD/target}/release/bulwark"
[ -x "$BW" ] || { echo "no $BW: cargo build --release --bins" >&2; exit 1; }
WORK=$(mktemp -d /tmp/bulwark-coalesce.XXXXXX)
S="bwc-s-$$"; C="bwc-c-$$"
. bench/lib.sh
trap bench_netns_down EXIT
bench_netns_up 70
bench_pki 70
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="bench/results/coalesce-$STAMP.txt"
worker_ticks() { # utime+stime (clock ticks) of every Bulwark process in the server namespace
    local tot=0
    for p in $(ip netns pids "$S"); do
        case "$(cat "/proc/$p/comm" 2>/dev/null || true)" in bulwark|bulwark-worker|bulwark-mgmt)
            tot=$((tot + $(awk '{print $14+$15}' "/proc/$p/stat"))) ;;
        esac
    done
    echo "$tot"
}
tun_bytes() {
    local d=/sys/class/net/tun0/statistics
    echo $(( $(ip netns exec "$S" cat "$d/rx_bytes") + $(ip netns exec "$S" cat "$d/tx_bytes") ))
}
rtt() { # median and 90th percentile of 100 pings through the tunnel, ms
    ip netns exec "$C" ping -n -c 100 -i 0.01 -W 1 10.8.0.1 2>/dev/null | python3 -c '
import re,sys
v=sorted(float(m.group(1)) for m in re.finditer(r"time=([0-9.]+)", sys.stdin.read()))
print(f"{v[len(v)//2]:.3f} {v[int(len(v)*0.9)]:.3f} {100-len(v)}" if v else "- - 100")'
}
HZ=$(getconf CLK_TCK)
for round in 1 2; do
    for v in "${VALUES[@]}"; do
        cp "$WORK/pki/server.conf" "$WORK/server-$v.conf"
        echo "coalesce-usecs $v" >> "$WORK/server-$v.conf"
        bench_tunnel_up "$WORK/server-$v.conf"
        idle=$(rtt)
        t0=$(worker_ticks); b0=$(tun_bytes)
        up_mbps=$(ip netns exec "$C" timeout $((SECS + 20)) iperf3 -c 10.8.0.1 -t "$SECS" -J 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6,1))' || echo -)
        down_mbps=$(ip netns exec "$C" timeout $((SECS + 20)) iperf3 -c 10.8.0.1 -t "$SECS" -R -J 2>/dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6,1))' || echo -)
        t1=$(worker_ticks); b1=$(tun_bytes)
        ip netns exec "$C" timeout $((SECS + 20)) iperf3 -c 10.8.0.1 -t "$SECS" > /dev/null 2>&1 &
        IPERF=$!
        sleep 1
        load=$(rtt)
        wait "$IPERF" || true
        line=$(python3 -c "
import sys
t,b,hz=$((t1 - t0)),$((b1 - b0)),$HZ
print(f'coalesce-usecs $v round $round: up $up_mbps Mbit/s, down $down_mbps Mbit/s, server CPU {t/hz/(b/1e9):.2f} s/GB; ping idle median/p90/lost ${idle// //} ms; ping under upload ${load// //}')")
        echo "$line" | tee -a "$OUT"
        for p in $(ip netns pids "$C") $(ip netns pids "$S"); do kill "$p" 2>/dev/null || true; done
        for _ in $(seq 1 50); do [ -z "$(ip netns pids "$C")$(ip netns pids "$S")" ] && break; sleep 0.1; done
        for p in $(ip netns pids "$C") $(ip netns pids "$S"); do kill -9 "$p" 2>/dev/null || true; done
        sleep 1
    done
done
echo "results: $OUT"
