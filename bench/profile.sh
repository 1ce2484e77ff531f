#!/usr/bin/env bash
# Profiles Bulwark's worker under one fixed-rate load with `perf record -g` (see bench/data-path.md).
#   bench/profile.sh [pps|udp|tcp] [SECONDS]
# pps: 64-byte UDP at 20 000 packets/s; udp: 1400-byte UDP at 200 Mbit/s; tcp: iperf3 TCP upload.
# Uses target/release as it is (build it first). Everything runs in two namespaces created here and
# removed on exit, also on failure. Output: bench/results/profile-<mode>-<UTC>.{data,txt}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=${1:-pps}; SECS=${2:-4}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for t in openvpn iperf3 ip perf; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
case "$MODE" in
    pps) LOAD=(-u -l 64 -b 10240000) ;;
    udp) LOAD=(-u -l 1400 -b 200M) ;;
    tcp) LOAD=() ;;
    *) echo "mode must be pps, udp or tcp" >&2; exit 2 ;;
esac
BW="$PWD/target/release/bulwark"
[ -x "$BW" ] || { echo "no $BW: cargo build --release --bins" >&2; exit 1; }
WORK=$(mktemp -d /tmp/bulwark-profile.XXXXXX)
S="bwp-s-$$"; C="bwp-c-$$"
. bench/lib.sh
trap bench_netns_down EXIT
bench_netns_up 60
bench_pki 60
bench_tunnel_up "$WORK/pki/server.conf"
W=""
for p in $(ip netns pids "$S"); do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = bulwark-worker ]; then W=$p; fi
done
[ -n "$W" ] || { echo "no worker process" >&2; exit 1; }
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="bench/results/profile-$MODE-$STAMP"
timeout $((SECS + 15)) ip netns exec "$C" iperf3 -c 10.8.0.1 -t $((SECS + 3)) "${LOAD[@]}" > "$WORK/iperf.txt" 2>&1 &
IPERF=$!
sleep 1.5
perf record -F 2000 -g -p "$W" -o "$OUT.data" -- sleep "$SECS" 2>/dev/null
wait "$IPERF" || true
perf report -i "$OUT.data" --no-children --sort sym --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -60 > "$OUT.txt" || true
tail -4 "$WORK/iperf.txt" >> "$OUT.txt"
echo "profile: $OUT.txt (raw: $OUT.data, not committed)"
