#!/usr/bin/env bash
# Steady-state worker CPU with many held clients, for two (or more) builds side by side.
#   bench/steady.sh --target-dirs "DIR_A DIR_B" [--sessions 1000] [--rate 20000] [--rounds 2]
#                   [--warmup 18] [--window 8]
# Each round runs, for every DIR in turn (interleaved A B A B ...), bench/threads.sh with one data
# thread, K sessions held for WARMUP+WINDOW+4 seconds and R inner packets/s spread over them (binaries
# from DIR/release), waits WARMUP seconds (every handshake done: only the data load is left), and reads
# the worker's CPU time (utime+stime of /proc/PID/stat) over WINDOW seconds. Reported per run and as
# the median per DIR, in CPU seconds per WINDOW and in microseconds per offered packet. Unlike
# threads.sh's totals (which include the handshakes of all K sessions), this isolates the cost of a
# packet with K clients connected. Needs root; everything runs in threads.sh's namespaces.
# Output: stdout and bench/results/steady-<UTC>.txt (threads.sh's own result files are removed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIRS=""; SESSIONS=1000; RATE=20000; ROUNDS=2; WARMUP=18; WINDOW=8
while [ $# -gt 0 ]; do
    case "$1" in
        --target-dirs) DIRS="$2"; shift 2 ;;
        --sessions) SESSIONS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
isint() { [[ "$1" =~ ^[0-9]+$ ]]; }
read -r -a DS <<< "$DIRS"
[ ${#DS[@]} -gt 0 ] || { echo "--target-dirs: one or more cargo target directories" >&2; exit 2; }
for v in "$SESSIONS" "$RATE" "$ROUNDS" "$WARMUP" "$WINDOW"; do isint "$v" || { echo "not a number: $v" >&2; exit 2; }; done
if [ "$ROUNDS" -lt 1 ] || [ "$ROUNDS" -gt 20 ]; then echo "--rounds: 1-20" >&2; exit 2; fi
if [ "$WINDOW" -lt 1 ] || [ "$WARMUP" -lt 1 ]; then echo "--warmup/--window: at least 1 s" >&2; exit 2; fi
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for d in "${DS[@]}"; do
    [ -x "$d/release/bulwark" ] || { echo "no $d/release/bulwark" >&2; exit 1; }
done
if pgrep -x bulwark-worker >/dev/null; then
    echo "a bulwark-worker is already running: stop it first (this script finds the worker by name)" >&2
    exit 1
fi
HZ=$(getconf CLK_TCK)
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench/results
OUT="bench/results/steady-$STAMP.txt"
LOGDIR=$(mktemp -d /tmp/bulwark-steady.XXXXXX)
trap 'rm -rf "$LOGDIR"' EXIT
ticks() { # utime+stime of a pid (comm may hold spaces: fields counted after the last ')')
    local s; s=$(cat "/proc/$1/stat") || return 1
    s=${s##*) }
    read -r -a f <<< "$s"
    echo $(( f[11] + f[12] ))
}
declare -A RESULTS
{
    echo "# bench/steady.sh --target-dirs \"$DIRS\" --sessions $SESSIONS --rate $RATE --rounds $ROUNDS --warmup $WARMUP --window $WINDOW at $STAMP"
    echo "# commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), kernel $(uname -r), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    for r in $(seq 1 "$ROUNDS"); do
        for d in "${DS[@]}"; do
            log="$LOGDIR/threads-$r-$(basename "$d").txt"
            bench/threads.sh --threads 1 --pairs 1 --sessions "$SESSIONS" --rate "$RATE" \
                --secs $((WARMUP + WINDOW + 4)) --target-dir "$d" > "$log" 2>&1 &
            bg=$!
            w=""
            for _ in $(seq 1 100); do w=$(pgrep -x bulwark-worker | head -1 || true); [ -n "$w" ] && break; sleep 0.2; done
            [ -n "$w" ] || { echo "no worker started for $d; threads.sh said:" >&2; tail -5 "$log" >&2; exit 1; }
            sleep "$WARMUP"
            a=$(ticks "$w"); sleep "$WINDOW"; b=$(ticks "$w")
            wait "$bg" || { echo "threads.sh failed for $d:" >&2; tail -5 "$log" >&2; exit 1; }
            cpu=$(python3 -c "print(f'{($b-$a)/$HZ:.3f}')")
            us=$(python3 -c "print(f'{($b-$a)/$HZ/($RATE*$WINDOW)*1e6:.2f}')")
            held=$(grep -o 'held [0-9]*/[0-9]*' "$log" | head -1 || true)
            # threads.sh's own result files hold whole-run totals (handshakes included): not kept
            for f in $(grep -o 'bench/results/threads-[^ ]*' "$log" || true); do rm -f "$f"; done
            echo "round $r $d: worker CPU ${cpu} s in ${WINDOW} s, ${us} us per offered packet (${held:-held ?})"
            RESULTS[$d]="${RESULTS[$d]:-} $cpu"
        done
    done
    for d in "${DS[@]}"; do
        read -r -a v <<< "${RESULTS[$d]}"
        python3 - "$d" "$RATE" "$WINDOW" "${v[@]}" <<'PY'
import statistics, sys
d, rate, window, vals = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), [float(x) for x in sys.argv[4:]]
m = statistics.median(vals)
print(f"median {d}: worker CPU {m:.3f} s in {window} s ({min(vals):.3f}-{max(vals):.3f}), "
      f"{m / (rate * window) * 1e6:.2f} us per offered packet")
PY
    done
    echo "# loadavg at the end $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
echo "results: $OUT" >&2
