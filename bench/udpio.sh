#!/usr/bin/env bash
# quinn-udp against Bulwark's hand-written batch.rs (recvmmsg/sendmmsg, UDP GSO/GRO), on loopback.
#   bench/udpio.sh [--no-build] [UDPIO OPTIONS...]
# Builds bench/udpio (its own workspace and Cargo.lock: the main build never compiles quinn-udp) with
# `cargo build --release --manifest-path bench/udpio/Cargo.toml` into $CARGO_TARGET_DIR (default
# target/udpio) and runs it; options after --no-build go to the binary (defaults: --sizes 1400,100
# --peers 1,8 --count 200000 --reps 5 --rate 100000 --window 2048 --secs 3 --bufsize 4194304 --recv-batch 32; see
# `udpio --help`). Traffic stays on 127.0.0.1; no root needed (as root, SO_{RCV,SND}BUFFORCE set the
# buffer sizes above net.core.*mem_max). Output: stdout and bench/results/udpio-<UTC>.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=1
if [ "${1:-}" = "--no-build" ]; then BUILD=""; shift; fi
TARGET="${CARGO_TARGET_DIR:-$PWD/target/udpio}"
if [ -n "$BUILD" ]; then
    CARGO_TARGET_DIR="$TARGET" cargo build --release --manifest-path bench/udpio/Cargo.toml
fi
BIN="$TARGET/release/udpio"
[ -x "$BIN" ] || { echo "no $BIN: run without --no-build" >&2; exit 1; }
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench/results
OUT="bench/results/udpio-$STAMP.txt"
{
    echo "# bench/udpio.sh $* at $STAMP"
    echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), kernel $(uname -r), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    "$BIN" "$@"
    echo "# loadavg at the end $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
echo "results: $OUT" >&2
