#!/usr/bin/env bash
# tun-rs' TUN offload against Bulwark's hand-written worker/src/offload.rs, and a plain TUN, as an IP
# forwarder between two TUN devices in two network namespaces, with iperf3 through it.
#   sudo bench/tunio.sh [--no-build] [--reps N] [--secs S]
# Builds bench/tunio (its own workspace and Cargo.lock: the main build never compiles tun-rs) with
# `cargo build --release --manifest-path bench/tunio/Cargo.toml` into $CARGO_TARGET_DIR (default
# target/tunio). Creates namespaces tunio-a-PID and tunio-b-PID (removed on exit, also on failure);
# `tunio run` creates tunA inside A and tunB inside B and forwards between them; tunA 10.201.0.1/24 with
# route 10.201.1.0/24 dev tunA, tunB 10.201.1.2/24 with route 10.201.0.0/24 dev tunB, rp_filter off.
# iperf3 server in B, TCP client in A (up: A→B, down: -R), --secs (default 8) each, modes interleaved
# ours tunrs plain for --reps (default 5). No traffic leaves the two namespaces.
# Output: stdout and bench/results/tunio-<UTC>.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=1
REPS=5
SECS=8
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=""; shift ;;
        --reps) REPS="${2:?--reps N}"; shift 2 ;;
        --secs) SECS="${2:?--secs S}"; shift 2 ;;
        *) echo "usage: bench/tunio.sh [--no-build] [--reps N] [--secs S]" >&2; exit 2 ;;
    esac
done
case "$REPS$SECS" in *[!0-9]*) echo "--reps and --secs take whole numbers" >&2; exit 2 ;; esac
if [ "$(id -u)" -ne 0 ]; then
    echo "bench/tunio.sh needs root (network namespaces, TUN devices): run it with sudo" >&2
    exit 1
fi
for tool in ip iperf3 jq timeout; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
TARGET="${CARGO_TARGET_DIR:-$PWD/target/tunio}"
if [ -n "$BUILD" ]; then
    CARGO_TARGET_DIR="$TARGET" cargo build --release --manifest-path bench/tunio/Cargo.toml
fi
BIN="$TARGET/release/tunio"
[ -x "$BIN" ] || { echo "no $BIN: run without --no-build" >&2; exit 1; }

NSA="tunio-a-$$"
NSB="tunio-b-$$"
WORK=$(mktemp -d /tmp/tunio.XXXXXX)
FWD_PID=""
SRV_PID=""
cleanup() {
    set +e
    exec 3>&- 4<&- 2>/dev/null
    [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null && wait "$FWD_PID" 2>/dev/null
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
    ip netns del "$NSA" 2>/dev/null
    ip netns del "$NSB" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# a quiet machine: wait (up to 10 min) for the 1-minute load to drop to 0.8
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in $(seq 60); do
    awk '{exit !($1 > 0.8)}' /proc/loadavg || break
    echo "# load $(cut -d' ' -f1 /proc/loadavg) > 0.8, waiting" >&2
    sleep 10
done

ip netns add "$NSA"
ip netns add "$NSB"
for ns in "$NSA" "$NSB"; do
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
# the server for every run (bound in time: the whole measurement plus a margin)
TOTAL=$(( REPS * 3 * 2 * (SECS + 15) + 120 ))
ip netns exec "$NSB" timeout "$TOTAL" iperf3 -s >/dev/null 2>&1 &
SRV_PID=$!

# one forwarder run: start it, configure the devices, iperf3 both ways, each between two marks
run_mode() { # rep mode
    local rep=$1 mode=$2 line dir json mbps
    mkfifo "$WORK/in" "$WORK/out"
    timeout $(( 2 * (SECS + 15) + 60 )) "$BIN" run --mode "$mode" --ns-a "$NSA" --ns-b "$NSB" \
        --max-secs $(( 2 * (SECS + 15) + 30 )) <"$WORK/in" >"$WORK/out" &
    FWD_PID=$!
    exec 3>"$WORK/in" 4<"$WORK/out"
    rm -f "$WORK/in" "$WORK/out"
    read -r -t 10 line <&4 || { echo "forwarder ($mode) did not start" >&2; return 1; }
    [ "$rep" = 1 ] && echo "# $line"
    ip -n "$NSA" addr add 10.201.0.1/24 dev tunA
    ip -n "$NSA" link set tunA up
    ip -n "$NSA" route add 10.201.1.0/24 dev tunA
    ip -n "$NSB" addr add 10.201.1.2/24 dev tunB
    ip -n "$NSB" link set tunB up
    ip -n "$NSB" route add 10.201.0.0/24 dev tunB
    for dir in up down; do
        local rflag=()
        [ "$dir" = down ] && rflag=(-R)
        echo "mark start" >&3
        read -r -t 10 line <&4 || { echo "forwarder ($mode) did not answer" >&2; return 1; }
        json=$(ip netns exec "$NSA" timeout $(( SECS + 15 )) iperf3 -c 10.201.1.2 -B 10.201.0.1 \
            -t "$SECS" -J "${rflag[@]}") || { echo "iperf3 $mode $dir failed: $json" >&2; return 1; }
        echo "mark $dir" >&3
        read -r -t 10 line <&4 || { echo "forwarder ($mode) did not answer" >&2; return 1; }
        mbps=$(jq -r '.end.sum_received.bits_per_second / 1e6' <<<"$json")
        echo "rep=$rep mode=$mode dir=${line%% *} mbps=$mbps ${line#* }" | tee -a "$RECS"
    done
    echo quit >&3
    exec 3>&- 4<&-
    wait "$FWD_PID" || { echo "forwarder ($mode) failed" >&2; FWD_PID=""; return 1; }
    FWD_PID=""
}

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench/results
OUT="bench/results/tunio-$STAMP.txt"
RECS="$WORK/records"
# everything below goes to stdout and $OUT (not a pipeline: the runs stay in this shell, so the
# EXIT trap sees the forwarder's pid)
exec 5>&1
exec > >(tee "$OUT")
TEE_PID=$!
echo "# bench/tunio.sh --reps $REPS --secs $SECS at $STAMP"
echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), kernel $(uname -r), $(nproc) CPUs, loadavg $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) before the first run"
echo "# namespaces $NSA (iperf3 -c, tunA 10.201.0.1/24) and $NSB (iperf3 -s, tunB 10.201.1.2/24); MTU 1500, txqueuelen default; up = A→B, down = -R"
"$BIN" probe --ns "$NSA" | sed 's/^/# /'
for rep in $(seq "$REPS"); do
    for mode in ours tunrs plain; do
        run_mode "$rep" "$mode"
    done
done
"$BIN" summary "$RECS"
echo "# loadavg at the end $(cut -d' ' -f1-3 /proc/loadavg)"
exec >&5 5>&-
wait "$TEE_PID" 2>/dev/null || true
echo "results: $OUT" >&2
