#!/usr/bin/env bash
# Many-client data load against Bulwark per `data-threads N` (see bench/README.md, "Data threads").
#   bench/threads.sh [--threads "1 2"] [--pairs 3] [--sessions 16] [--secs 10] [--rate "150000"]
#                    [--size 1200] [--target-dir DIR] [--keep-logs]
# For each rate, P interleaved rounds over the N values (1 2 1 2 ...): a fresh Bulwark server (the
# handshake-bench config of run.sh plus `data-threads N`; N=0 = no directive written, for a server that
# does not know it) and one bulwark-hsload run in the client namespace: K sessions, each held for S
# seconds after its handshake, sending R inner 1200-byte IPv4/UDP packets per second in total (spread
# over the sessions, each from its own source port) to 10.8.0.1:9000 through the tunnel. Nothing listens
# there: the server namespace's `Udp: NoPorts` counter counts the delivered packets (no receiver CPU;
# the kernel answers with rate-limited ICMP, ~1 per client and second). Per run: offered pps (the
# generator's achieved send rate), delivered pps, loss %, Bulwark CPU seconds (all Bulwark processes),
# the worker's CPU per thread (by thread name), the server's UDP receive-buffer drops and the server
# log's warning lines; then the median per N. --keep-logs: every run's server log and generator JSON
# also go to bench/results/threads-<UTC>-logs/. Binaries: --target-dir, else $CARGO_TARGET_DIR, else target/
# (release). Everything runs in two namespaces created here and removed on exit, also on failure.
# Output: one line per run and bench/results/threads-<UTC>.{txt,jsonl}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="1 2"; PAIRS=3; SESSIONS=16; SECS=10; RATES="150000"; SIZE=1200
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SINK_PORT=9000
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --pairs) PAIRS="$2"; shift 2 ;;
        --sessions) SESSIONS="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --rate) RATES="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --target-dir) TARGET_DIR="$2"; shift 2 ;;
        --keep-logs) KEEP_LOGS=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
isint() { [[ "$1" =~ ^[0-9]+$ ]]; }
inrange() { isint "$1" && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
read -r -a NS <<< "$THREADS"; read -r -a RS <<< "$RATES"
[ ${#NS[@]} -gt 0 ] || { echo "--threads: a list of 0-8" >&2; exit 2; }
[ ${#RS[@]} -gt 0 ] || { echo "--rate: a list of packets/s" >&2; exit 2; }
for n in "${NS[@]}"; do inrange "$n" 0 8 || { echo "--threads: values 0-8 (0 = no data-threads line)" >&2; exit 2; }; done
for r in "${RS[@]}"; do inrange "$r" 0 2000000 || { echo "--rate: values 0-2000000 packets/s" >&2; exit 2; }; done
inrange "$PAIRS" 1 20 || { echo "--pairs: 1-20" >&2; exit 2; }
inrange "$SESSIONS" 1 1024 || { echo "--sessions: 1-1024" >&2; exit 2; }
inrange "$SECS" 1 120 || { echo "--secs: 1-120" >&2; exit 2; }
inrange "$SIZE" 28 1500 || { echo "--size: 28-1500 bytes (inner IPv4 packet)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)" >&2; exit 1; }
for t in ip ss python3 timeout; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
BW="$TARGET_DIR/release/bulwark"; HSLOAD="$TARGET_DIR/release/bulwark-hsload"
for b in "$BW" "$HSLOAD"; do [ -x "$b" ] || { echo "no $b: cargo build --release --bins (or --target-dir)" >&2; exit 1; }; done
for n in "${NS[@]}"; do
    if [ "$n" != 0 ] && ! grep -q '"data-threads"' config/src/directives.rs 2>/dev/null; then
        echo "warning: this tree's config has no data-threads directive; a server that does not know it will not start (N=0 omits the line)" >&2
        break
    fi
done
WORK=$(mktemp -d /tmp/bulwark-threads.XXXXXX)
S="bwt-s-$$"; C="bwt-c-$$"
. bench/lib.sh
trap bench_netns_down EXIT
bench_netns_up 80
bench_pki 80
# run.sh's handshake-bench server config: a /16 pool, duplicate-cn (every session uses client1),
# connect-freq-initial and max-clients raised so that they are not what is measured
bench_hs_conf "$WORK/server-base.conf"
HSPKI="$WORK/pki/hsload"; bench_hsload_pki "$HSPKI"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="bench/results/threads-$STAMP"
HZ=$(getconf CLK_TCK)

# counters of one moment, as "key value" lines (read inside the server namespace, so /proc/net is
# its own): Bulwark CPU ticks (utime+stime of every Bulwark process), the worker's threads
# ("thread TID COMM ticks"), the namespace's UDP counters, softnet backlog drops (whole host), the time
snap() {
    local pids
    mapfile -t pids < <(ip netns pids "$S")
    ip netns exec "$S" python3 - "${pids[@]}" <<'PY'
import sys,time
BULWARK={"bulwark","bulwark-worker","bulwark-mgmt"}
def stat(path):  # (comm, utime+stime); comm may contain spaces and parentheses
    s=open(path).read(); f=s[s.rindex(")")+2:].split()
    return s[s.index("(")+1:s.rindex(")")], int(f[11])+int(f[12])
cpu=0; worker=None
for p in sys.argv[1:]:
    try:
        comm,t=stat(f"/proc/{p}/stat")
    except (OSError,ValueError,IndexError):
        continue
    if comm in BULWARK:
        cpu+=t
        if comm=="bulwark-worker": worker=p
print("cpu",cpu)
if worker:
    import os
    for tid in os.listdir(f"/proc/{worker}/task"):
        try:
            comm,t=stat(f"/proc/{worker}/task/{tid}/stat")
            print("thread",tid,comm.replace(" ","_") or "-",t)
        except (OSError,ValueError,IndexError):
            pass
hdr=val=None
for l in open("/proc/net/snmp"):
    if l.startswith("Udp:"):
        if hdr is None: hdr=l.split()[1:]
        else: val=[int(x) for x in l.split()[1:]]
u=dict(zip(hdr or [],val or []))
for k,n in (("InDatagrams","udp_in"),("NoPorts","udp_noports"),("InErrors","udp_inerr"),("RcvbufErrors","udp_rcvbuf")):
    print(n,u.get(k,0))
print("softnet_drop",sum(int(l.split()[1],16) for l in open("/proc/net/softnet_stat")))
print("ns",time.time_ns())
PY
}

run_one() { # $1 = rate, $2 = N, $3 = round; appends a JSON line to $RESULTS
    local rate=$1 n=$2 round=$3 conf="$WORK/server-$2.conf" log="$WORK/server-$1-$2-$3.log"
    cp "$WORK/server-base.conf" "$conf"
    [ "$n" = 0 ] || echo "data-threads $n" >> "$conf"
    ip netns exec "$S" "$BW" --config "$conf" > "$log" 2>&1 &
    local bound=""
    for _ in $(seq 1 50); do ip netns exec "$S" ss -Hlun 'sport = :1194' 2>/dev/null | grep -q . && { bound=1; break; }; sleep 0.1; done
    [ -n "$bound" ] || { echo "server (data-threads $n) did not bind UDP 1194; log:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 1 # worker and broker up before the CPU is sampled
    local alive=""
    for p in $(ip netns pids "$S"); do [ "$(cat "/proc/$p/comm" 2>/dev/null || true)" = bulwark ] && alive=1; done
    [ -n "$alive" ] || { echo "server (data-threads $n) exited during start-up; log:" >&2; tail -20 "$log" >&2; exit 1; }
    local raw="$WORK/raw-$rate-$n-$round" hs="$WORK/hsload-$rate-$n-$round.json"
    snap > "$raw.0"
    ip netns exec "$C" timeout -k 5 $((SECS + 40)) "$HSLOAD" --server 10.99.80.1:1194 \
        --ca "$HSPKI/ca.pem" --cert "$HSPKI/cert.pem" --key "$HSPKI/key.pem" --tls-crypt "$HSPKI/tls-crypt.pem" \
        --count "$SESSIONS" --concurrency "$SESSIONS" --timeout $((SECS + 30)) \
        --hold "$SECS" --data-pps "$rate" --data-dst "10.8.0.1:$SINK_PORT" --data-size "$SIZE" \
        > "$hs" 2> "$hs.err" || echo "warning: bulwark-hsload failed (data-threads $n, rate $rate): $(tail -3 "$hs.err")" >&2
    sleep 0.5 # packets still queued reach the sink
    snap > "$raw.1"
    # stop the parent first (it shuts its worker and broker down in order), then whatever is left
    for p in $(ip netns pids "$S"); do
        if [ "$(cat "/proc/$p/comm" 2>/dev/null || true)" = bulwark ]; then kill "$p" 2>/dev/null || true; fi
    done
    for _ in $(seq 1 50); do [ -z "$(ip netns pids "$S")" ] && break; sleep 0.1; done
    for p in $(ip netns pids "$S"); do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 20); do [ -z "$(ip netns pids "$S")" ] && break; sleep 0.1; done
    for p in $(ip netns pids "$S") $(ip netns pids "$C"); do kill -9 "$p" 2>/dev/null || true; done
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$OUT-logs"; cp "$log" "$hs" "$hs.err" "$OUT-logs/"; fi
    python3 - "$rate" "$n" "$round" "$raw" "$hs" "$log" "$HZ" "$SESSIONS" "$SECS" "$SIZE" "$RESULTS" <<'PY' | tee -a "$OUT.txt"
import json,re,sys
rate,n,rnd,raw,hs,log,hz,k,secs,size,results=sys.argv[1:12]
rate,n,rnd,hz=int(rate),int(n),int(rnd),int(hz)
def load(f):
    d={"threads":{}}
    for l in open(f):
        p=l.split()
        if p[0]=="thread": d["threads"][p[1]]=(p[2],int(p[3]))
        else: d[p[0]]=int(p[1])
    return d
a,b=load(raw+".0"),load(raw+".1")
dd=lambda key: b[key]-a[key]
try: h=json.loads(open(hs).read().strip().splitlines()[-1])
except (OSError,ValueError,IndexError): h={}
data=h.get("data") or {}
sent=data.get("sent") or 0; active=data.get("active_s") or 0.0
delivered=dd("udp_noports")
threads=[]
for tid,(comm,t1) in sorted(b["threads"].items(),key=lambda x:int(x[0])):
    t0=a["threads"].get(tid,(comm,0))[1]
    threads.append({"tid":int(tid),"comm":comm,"cpu_s":(t1-t0)/hz})
warn=[]; lines=0
try:
    for l in open(log,errors="replace"):
        lines+=1
        # what OpenVPN-style logs say when something goes wrong (not the PUSH_REPLY/Timers lines,
        # which mention ping-restart); the timestamp is cut so that repeats collapse
        if re.search(r"\b(error|warning|fail(ed|ure)?|drop(ped)?|bad source|unknown|denied|overflow|full)\b",l,re.I) \
           and not re.search(r"PUSH_REPLY|Timers:",l):
            warn.append(re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ","",l.strip()))
except OSError: pass
r={"rate":rate,"data_threads":n,"round":rnd,"sessions":int(k),"secs":int(secs),"size":int(size),
  "completed":h.get("completed"),"failed":h.get("failed"),"failures":h.get("failures"),
  "held":data.get("held"),"held_fully":data.get("held_fully"),
  "offered_pps":data.get("send_pps"),"sent":sent,"dropped_at_client_socket":data.get("dropped_socket"),
  "send_errors":data.get("send_errors"),"skipped_late":data.get("skipped_late"),"active_s":active,
  "gen_cpu_s":h.get("gen_cpu_s"),
  "delivered":delivered,"delivered_pps":delivered/active if active>0 else None,
  "loss_pct":100.0*(sent-delivered)/sent if sent>0 else None,
  "server_outer_datagrams":dd("udp_in"),"server_udp_rcvbuf_errors":dd("udp_rcvbuf"),
  "server_udp_in_errors":dd("udp_inerr"),"softnet_drops":dd("softnet_drop"),
  "bulwark_cpu_s":dd("cpu")/hz,"wall_s":dd("ns")/1e9,"worker_threads":threads,
  "server_log_lines":lines,"server_log_warnings":len(warn),"server_log_examples":sorted(set(warn))[:5]}
with open(results,"a") as out: out.write(json.dumps(r)+"\n")
f=lambda v,p=0: "-" if v is None else f"{v:.{p}f}"
th=", ".join(f"{t['comm']} {t['cpu_s']:.2f}" for t in threads if t["cpu_s"]>=0.01) or "-"
print(f"rate {rate} data-threads {n} round {rnd}: offered {f(r['offered_pps'])} pps, delivered "
      f"{f(r['delivered_pps'])} pps, loss {f(r['loss_pct'],2)} %, Bulwark CPU {r['bulwark_cpu_s']:.2f} s in "
      f"{r['wall_s']:.1f} s; worker threads (CPU s): {th}; held {r['held']}/{k} (full {r['held_fully']}), "
      f"handshake failures {r['failed']}, server rcvbuf drops {r['server_udp_rcvbuf_errors']}, softnet drops "
      f"{r['softnet_drops']}, client socket drops {r['dropped_at_client_socket']}, late-skipped {r['skipped_late']}, "
      f"generator CPU {f(r['gen_cpu_s'],2)} s, server log warnings {len(warn)}")
for e in r["server_log_examples"]: print(f"    server log: {e}")
PY
    sleep 1
}

RESULTS="$OUT.jsonl"; : > "$RESULTS"
{
    echo "bench/threads.sh $STAMP: threads [${NS[*]}] (0 = no directive), $PAIRS rounds, $SESSIONS sessions held $SECS s,"
    echo "rates [${RS[*]}] packets/s of $SIZE-byte inner IPv4/UDP to 10.8.0.1:$SINK_PORT; binaries $TARGET_DIR/release"
    echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT.txt"
for rate in "${RS[@]}"; do
    for round in $(seq 1 "$PAIRS"); do
        for n in "${NS[@]}"; do run_one "$rate" "$n" "$round"; done
    done
done
python3 - "$RESULTS" <<'PY' | tee -a "$OUT.txt"
import json,statistics,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
groups={}
for r in rows: groups.setdefault((r["rate"],r["data_threads"]),[]).append(r)
print("median per (rate, data-threads): offered pps, delivered pps, loss %, Bulwark CPU s, worker's busiest thread CPU s")
def med(rs,k):
    v=[r[k] for r in rs if r.get(k) is not None]
    return statistics.median(v) if v else None
f=lambda v,p=0: "-" if v is None else f"{v:.{p}f}"
for (rate,n),rs in sorted(groups.items()):
    busiest=[max((t["cpu_s"] for t in r["worker_threads"]),default=0.0) for r in rs]
    print(f"  rate {rate} data-threads {n} ({len(rs)} runs): offered {f(med(rs,'offered_pps'))}, delivered {f(med(rs,'delivered_pps'))}, "
          f"loss {f(med(rs,'loss_pct'),2)} %, CPU {f(med(rs,'bulwark_cpu_s'),2)} s, busiest thread {statistics.median(busiest):.2f} s")
PY
echo "results: $OUT.txt $OUT.jsonl"
