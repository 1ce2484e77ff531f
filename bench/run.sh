#!/usr/bin/env bash
# Bulwark vs OpenVPN 2.6 data-plane benchmark, interleaved A B A B (see bench/README.md).
#   bench/run.sh [--pairs N] [--secs S] [--quick] [--no-build]
#                [--udp-rate RATE] [--pps N] [--handshakes N] [--hs-gen own|stock]
#                [--hs-concurrency C] [--hs-batch N] [--hs-timeout S]
# A = /usr/sbin/openvpn as the server, B = Bulwark (release build); the same stock OpenVPN 2.6 client,
# certificates, port, `server 10.8.0.0 255.255.255.0`, `topology subnet`, tls-crypt, AES-256-GCM.
# Per run: TCP bulk up + down, a fixed-rate UDP load, a small-packet fixed-pps UDP load (server runs
# data A, data B) and then the handshake-rate mode (server runs hs A, hs B, with the handshake limits
# raised the same way for both; clients: the bulwark-hsload generator, or stock clients with --hs-gen stock).
# Everything runs inside two network namespaces created here and removed on exit (also on failure).
# Binaries: $CARGO_TARGET_DIR/release if set (sudo CARGO_TARGET_DIR=... bench/run.sh), else target/release.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PAIRS=5; SECS=10
UDP_RATE=200M      # iperf3 -b for the fixed-rate UDP load (1400-byte payloads); 0 = skip
PPS=20000          # packets/s of the small-packet load (64-byte payloads); 0 = skip
HANDSHAKES=""      # handshakes per handshake run; 0 = skip; default 1000 (own) or 30 (stock)
HS_GEN=own         # own: bench/hsload (bulwark-hsload), stock: stock openvpn client processes
HS_CONC=32         # own: sessions in their handshake at once
HS_BATCH=5         # stock: clients started in parallel per batch
HS_TIMEOUT=30      # own: bound of the whole generator run; stock: of one batch (s)
SEG=1400           # bytes of one "segment equivalent" (per-segment metrics)
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --quick) PAIRS=1; SECS=5; shift ;;
        --no-build) NOBUILD=1; shift ;;
        --udp-rate) UDP_RATE="$2"; shift 2 ;;
        --pps) PPS="$2"; shift 2 ;;
        --handshakes) HANDSHAKES="$2"; shift 2 ;;
        --hs-gen) HS_GEN="$2"; shift 2 ;;
        --hs-concurrency) HS_CONC="$2"; shift 2 ;;
        --hs-batch) HS_BATCH="$2"; shift 2 ;;
        --hs-timeout) HS_TIMEOUT="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$HS_GEN" in own|stock) ;; *) echo "--hs-gen: own or stock" >&2; exit 2 ;; esac
if [ -z "$HANDSHAKES" ]; then if [ "$HS_GEN" = own ]; then HANDSHAKES=1000; else HANDSHAKES=30; fi; fi
isint() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in PAIRS SECS PPS HANDSHAKES HS_CONC HS_BATCH HS_TIMEOUT; do isint "${!v}" || { echo "$v must be a non-negative integer" >&2; exit 2; }; done
[[ "$UDP_RATE" =~ ^[0-9]+(\.[0-9]+)?[KMG]?$ ]] || { echo "--udp-rate: a number with an optional K/M/G suffix (bits/s), 0 = skip" >&2; exit 2; }
inrange() { [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
inrange "$PAIRS" 1 1000 || { echo "--pairs between 1 and 1000" >&2; exit 2; }
inrange "$SECS" 1 600 || { echo "--secs between 1 and 600" >&2; exit 2; }
[ "$PPS" -le 200000 ] || { echo "--pps at most 200000" >&2; exit 2; }
# the handshake server config raises connect-freq-initial, max-clients and the pool (see HS_LIMITS below);
# stock clients cost ~40-50 ms of CPU each and are stopped without an exit notification (their instances
# stay until ping-restart), so their runs stay short; the generator ends every session with EXIT, which
# frees it on both servers 5 s later
if [ "$HS_GEN" = own ]; then
    [ "$HANDSHAKES" -le 5000 ] || { echo "--handshakes at most 5000 with --hs-gen own" >&2; exit 2; }
else
    [ "$HANDSHAKES" -le 90 ] || { echo "--handshakes at most 90 with --hs-gen stock" >&2; exit 2; }
fi
inrange "$HS_CONC" 1 512 || { echo "--hs-concurrency between 1 and 512" >&2; exit 2; }
inrange "$HS_BATCH" 1 20 || { echo "--hs-batch between 1 and 20" >&2; exit 2; }
inrange "$HS_TIMEOUT" 1 300 || { echo "--hs-timeout between 1 and 300" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "bench needs root (network namespaces, TUN)" >&2; exit 1; }
for t in openvpn iperf3 ip python3 timeout; do command -v "$t" >/dev/null || { echo "missing $t (apt-get install openvpn iperf3 iproute2 python3 coreutils)" >&2; exit 1; }; done
# --no-build: measure the binaries already in target/release (say so when reporting figures)
[ -n "${NOBUILD:-}" ] || cargo build --release --bins >/dev/null
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BW="$TARGET_DIR/release/bulwark"
HSLOAD="$TARGET_DIR/release/bulwark-hsload"
[ -x "$BW" ] || { echo "missing $BW (build it, or set CARGO_TARGET_DIR)" >&2; exit 1; }
if [ "$HANDSHAKES" != 0 ] && [ "$HS_GEN" = own ]; then
    [ -x "$HSLOAD" ] || { echo "missing $HSLOAD (cargo build --release --bins)" >&2; exit 1; }
fi
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
# the handshake mode runs N clients with the one client1 certificate at once: that server config gets
# `duplicate-cn` (without it each new client would replace the previous one) and, identically for A and
# B, limits raised so that they are not what is measured: connect-freq-initial (default 100 stateless
# replies per 10 s), max-clients (default 1024; instances linger 5 s after EXIT) and a /16 pool
HS_LIMITS="connect-freq-initial 100000 10, max-clients 10000, server 10.8.0.0 255.255.0.0"
bench_hs_conf "$WORK/pki/server-hs.conf"
# the generator's copies of what the client1 profile carries inline
HSPKI="$WORK/pki/hsload"; bench_hsload_pki "$HSPKI"
OFFLOAD=$(ip netns exec "$S" sh -c 'command -v ethtool >/dev/null && ethtool -k veth0 | grep -E "^(tx-checksumming|generic-segmentation-offload|generic-receive-offload|tcp-segmentation-offload):" | tr "\n" ";"' || echo "ethtool not installed")
HZ=$(getconf CLK_TCK)

cpu_ticks() { # sum utime+stime of the server processes in ns S (not iperf3)
    local tot=0
    for p in $(ip netns pids "$S"); do
        local comm; comm=$(cat /proc/"$p"/comm 2>/dev/null || true)
        case "$comm" in openvpn|bulwark|bulwark-worker|bulwark-mgmt)
            tot=$((tot + $(awk '{print $14+$15}' /proc/"$p"/stat))) ;;
        esac
    done
    echo $tot
}
tun_stat() { ip netns exec "$S" cat /sys/class/net/tun0/statistics/"$1"; }
server_pids() { # comma-separated pids of the server processes in ns S
    local out=""
    for p in $(ip netns pids "$S"); do
        case "$(cat /proc/"$p"/comm 2>/dev/null || true)" in openvpn|bulwark|bulwark-worker|bulwark-mgmt) out="$out${out:+,}$p" ;; esac
    done
    echo "$out"
}
sys_ticks() { awk '/^cpu /{print $2+$3+$4+$6+$7+$8}' /proc/stat; }
# idle+iowait+steal of the machine: kept exactly (nanoseconds, shown in ticks) by the NO_HZ idle code, while
# the busy columns above are sampled at the tick, which misses much of a bursty fixed-rate load
idle_ticks() { awk '/^cpu /{print $5+$6+$9}' /proc/stat; }
NCPU=$(getconf _NPROCESSORS_ONLN)
# counters around one measurement window: snap PREFIX appends "PREFIX_cpu ticks", "PREFIX_bytes",
# "PREFIX_pkts", "PREFIX_sys", "PREFIX_idle", "PREFIX_ns" (wall clock) to $RAW; the python below takes
# the differences
snap() {
    echo "$1_cpu $(cpu_ticks)
$1_bytes $(( $(tun_stat rx_bytes) + $(tun_stat tx_bytes) ))
$1_pkts $(( $(tun_stat rx_packets) + $(tun_stat tx_packets) ))
$1_sys $(sys_ticks)
$1_idle $(idle_ticks)
$1_ns $(date +%s%N)" >> "$RAW"
}
# iperf3 client in ns C with a hard time bound; the JSON goes to $1 (an empty/invalid file = failed)
iperf() {
    local out=$1; shift
    ip netns exec "$C" timeout -k 5 $((SECS + 30)) iperf3 -c 10.8.0.1 -t "$SECS" -J "$@" > "$out" 2>/dev/null \
        || echo "warning: iperf3 $* failed or timed out (see $out)" >&2
}
kill_ns_procs() { # SIGTERM everything in both namespaces, then wait (bounded) until they are gone
    for p in $(ip netns pids "$C") $(ip netns pids "$S"); do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 1 50); do [ -z "$(ip netns pids "$C")$(ip netns pids "$S")" ] && break; sleep 0.1; done
    for p in $(ip netns pids "$C") $(ip netns pids "$S"); do kill -9 "$p" 2>/dev/null || true; done
    sleep 1
}

run_one() { # $1 = A|B, $2 = pair ; prints a JSON line
    local which=$1 pair=$2 srv
    if [ "$which" = A ]; then srv=(openvpn --config "$WORK/pki/server.conf"); else srv=("$BW" --config "$WORK/pki/server.conf"); fi
    ip netns exec "$S" "${srv[@]}" > "$WORK/server-$which.log" 2>&1 &
    sleep 1.5
    ip netns exec "$C" openvpn --config "$WORK/pki/clients/client1.ovpn" > "$WORK/client-$which.log" 2>&1 &
    local up=""
    for _ in $(seq 1 30); do ip netns exec "$C" ping -c1 -W1 10.8.0.1 >/dev/null 2>&1 && { up=1; break; }; sleep 0.5; done
    [ -n "$up" ] || { echo "tunnel to server $which did not come up; server log:" >&2; tail -20 "$WORK/server-$which.log" >&2; exit 1; }
    ip netns exec "$S" iperf3 -s -D -p 5201 >/dev/null 2>&1; sleep 0.5
    RAW="$WORK/raw-$which-$pair.txt"; : > "$RAW"
    local J="$WORK/iperf-$which-$pair"
    snap tcp0
    # syscalls of the server processes (all threads) during both transfers: perf counting mode on the
    # raw_syscalls:sys_enter tracepoint (no per-event recording; overhead is a counter increment per syscall)
    local perfpid="" perfout="$WORK/perf-$which-$$-$RANDOM.csv"
    if command -v perf >/dev/null; then
        perf stat -x, -e raw_syscalls:sys_enter -p "$(server_pids)" -o "$perfout" >/dev/null 2>&1 &
        perfpid=$!
    fi
    iperf "$J-up.json"
    iperf "$J-down.json" -R
    snap tcp1
    local sc=0
    if [ -n "$perfpid" ]; then
        kill -INT "$perfpid" 2>/dev/null || true; wait "$perfpid" 2>/dev/null || true
        sc=$(awk -F, '/raw_syscalls:sys_enter/{print $1+0}' "$perfout" 2>/dev/null | head -1); sc=${sc:-0}
    fi
    echo "tcp_syscalls $sc" >> "$RAW"
    # fixed-rate UDP, client -> server, 1400-byte payloads: below both servers' ceilings, so both move the
    # same packets and the server's CPU per packet/GB compares at equal load (no perf attached here)
    if [ "$UDP_RATE" != 0 ]; then
        sleep 0.5; snap udp0
        iperf "$J-udp.json" -u -b "$UDP_RATE" -l 1400
        snap udp1
    fi
    # small packets at a fixed packet rate: 64-byte payloads, -b = pps * 64 * 8
    if [ "$PPS" != 0 ]; then
        sleep 0.5; snap pps0
        iperf "$J-pps.json" -u -b $((PPS * 64 * 8)) -l 64
        snap pps1
    fi
    kill_ns_procs
    python3 - "$which" "$pair" "$RAW" "$J" "$HZ" "$SEG" "$UDP_RATE" "$PPS" "$NCPU" <<'PY'
import json,sys
w,pair,raw,J,hz,seg,udp_rate,pps=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4],int(sys.argv[5]),int(sys.argv[6]),sys.argv[7],int(sys.argv[8])
ncpu=int(sys.argv[9])
r={}
for l in open(raw):
    k,v=l.split(); r[k]=int(v)
def d(win,k): return r[win+"1_"+k]-r[win+"0_"+k]
def busy_s(win): # CPU-seconds of the whole machine not idle (nor iowait, nor stolen) during the window
    return max(0.0,ncpu*d(win,"ns")/1e9-d(win,"idle")/hz)
def ipj(name):
    try: return json.load(open(f"{J}-{name}.json"))
    except Exception: return None
def div(a,b): return a/b if (a is not None and b) else None
def tcp_bps(j):
    try: return j["end"]["sum_received"]["bits_per_second"]
    except Exception: return None
def udp_sum(j):
    # iperf3 client JSON: end.sum carries the receiver's loss after the results exchange (3.x)
    try: s=j["end"]["sum"]
    except Exception: return None
    if "lost_percent" not in s and "sum_received" in j["end"]: s=j["end"]["sum_received"]
    return s
up,down=tcp_bps(ipj("up")),tcp_bps(ipj("down"))
cpu_s=d("tcp","cpu")/hz; byts=d("tcp","bytes"); gb=byts/1e9; pk=d("tcp","pkts"); segs=byts/seg; sc=r["tcp_syscalls"]
row={"server":w,"pair":pair,"kind":"data",
  "up_mbps":div(up,1e6),"down_mbps":div(down,1e6),"server_cpu_s":cpu_s,
  "tun_gb":gb,"tun_packets":pk,"tun_segments":segs,
  "server_cpu_s_per_gb":div(cpu_s,gb),"cpu_us_per_packet":div(cpu_s*1e6,pk),"cpu_us_per_segment":div(cpu_s*1e6,segs),
  "system_cpu_s_per_gb":div(d("tcp","sys")/hz,gb),"system_busy_cpu_s_per_gb":div(busy_s("tcp"),gb),
  "syscalls_per_packet":div(sc,pk) if sc else None,"syscalls_per_segment":div(sc,segs) if sc else None}
for win,name in (("udp","udp"),("pps","pps")):
    if win+"0_cpu" not in r: continue
    s=udp_sum(ipj(name))
    cpu=d(win,"cpu")/hz; b=d(win,"bytes"); p=d(win,"pkts"); g=b/1e9
    row[win+"_server_cpu_s"]=cpu; row[win+"_tun_packets"]=p; row[win+"_tun_gb"]=g
    row[win+"_cpu_us_per_packet"]=div(cpu*1e6,p)
    row[win+"_system_cpu_s"]=busy_s(win)
    row[win+"_loss_pct"]=s.get("lost_percent") if s else None
    row[win+"_sent_packets"]=s.get("packets") if s else None
    row[win+"_lost_packets"]=s.get("lost_packets") if s else None
    if win=="udp":
        row["udp_rate"]=udp_rate
        row["udp_mbps"]=div(s.get("bits_per_second") if s else None,1e6)
        row["udp_server_cpu_s_per_gb"]=div(cpu,g)
        row["udp_cpu_us_per_segment"]=div(cpu*1e6,b/seg)
        row["udp_system_cpu_s_per_gb"]=div(busy_s(win),g)
    else:
        row["pps_target"]=pps
        row["pps_sent_per_s"]=div(s.get("packets") if s else None,s.get("seconds") if s else None)
        row["pps_system_cpu_us_per_packet"]=div(busy_s(win)*1e6,p)
print(json.dumps(row))
PY
}

# handshake-rate mode: $1 = A|B, $2 = pair; server with server-hs.conf, then $HANDSHAKES handshakes:
# --hs-gen own: one bulwark-hsload run ($HS_CONC sessions in flight, each ended with EXIT);
# --hs-gen stock: stock clients in batches of $HS_BATCH, each stopped once its log says
# "Initialization Sequence Completed"
run_hs() {
    local which=$1 pair=$2 srv
    if [ "$which" = A ]; then srv=(openvpn --config "$WORK/pki/server-hs.conf"); else srv=("$BW" --config "$WORK/pki/server-hs.conf"); fi
    ip netns exec "$S" "${srv[@]}" > "$WORK/server-hs-$which-$pair.log" 2>&1 &
    local bound=""
    for _ in $(seq 1 50); do ip netns exec "$S" ss -Hlun 'sport = :1194' 2>/dev/null | grep -q . && { bound=1; break; }; sleep 0.1; done
    [ -n "$bound" ] || { echo "server $which did not bind UDP 1194; log:" >&2; tail -20 "$WORK/server-hs-$which-$pair.log" >&2; exit 1; }
    sleep 1   # let the server finish starting (Bulwark: worker and broker) before its CPU is sampled
    python3 - "$which" "$pair" "$S" "$C" "$WORK" "$HANDSHAKES" "$HS_BATCH" "$HS_TIMEOUT" "$HZ" \
        "$HS_GEN" "$HS_CONC" "$HSLOAD" "$HSPKI" "10.99.50.1:1194" <<'PY'
import json,math,os,signal,subprocess,sys,time
w,pair,S,C,work=sys.argv[1],int(sys.argv[2]),sys.argv[3],sys.argv[4],sys.argv[5]
n,batch,timeout,hz=int(sys.argv[6]),int(sys.argv[7]),float(sys.argv[8]),int(sys.argv[9])
gen,conc,hsload,hspki,server=sys.argv[10],int(sys.argv[11]),sys.argv[12],sys.argv[13],sys.argv[14]
SERVER={"openvpn","bulwark","bulwark-worker","bulwark-mgmt"}
def cpu_ticks():  # as cpu_ticks in run.sh: utime+stime of the server processes in ns S
    tot=0
    for p in subprocess.run(["ip","netns","pids",S],capture_output=True,text=True,timeout=10).stdout.split():
        try:
            if open(f"/proc/{p}/comm").read().strip() not in SERVER: continue
            f=open(f"/proc/{p}/stat").read().rsplit(")",1)[1].split()
            tot+=int(f[11])+int(f[12])   # fields 14, 15 of stat (utime, stime)
        except (OSError,ValueError,IndexError): pass
    return tot
def cpu_ns():  # the same processes, all threads: sum_exec_runtime (ns) from /proc/PID/task/TID/schedstat
    tot=0
    for p in subprocess.run(["ip","netns","pids",S],capture_output=True,text=True,timeout=10).stdout.split():
        try:
            if open(f"/proc/{p}/comm").read().strip() not in SERVER: continue
            for t in os.listdir(f"/proc/{p}/task"):
                tot+=int(open(f"/proc/{p}/task/{t}/schedstat").read().split()[0])
        except (OSError,ValueError,IndexError): pass
    return tot
def cpu_s(c0,c1,n0,n1):
    # CPU-seconds: schedstat's nanoseconds (clock ticks are 10 ms, too coarse for a few handshakes); the
    # ticks stay in the JSON as a cross-check, and are used if schedstat is not available (reads 0)
    return (n1-n0)/1e9 if n1>n0 else (c1-c0)/hz
def q(lat,frac):  # nearest rank
    return lat[min(len(lat),max(1,math.ceil(len(lat)*frac)))-1] if lat else None
if gen=="own":
    # one generator run; server CPU from before it starts to after it has ended (every session ended
    # with EXIT, or timed out), and again after the servers' 5 s EXIT linger (instances freed)
    cmd=["ip","netns","exec",C,hsload,"--server",server,"--ca",f"{hspki}/ca.pem","--cert",f"{hspki}/cert.pem",
         "--key",f"{hspki}/key.pem","--tls-crypt",f"{hspki}/tls-crypt.pem","--count",str(n),
         "--concurrency",str(conc),"--timeout",str(int(timeout))]
    c0=cpu_ticks(); n0=cpu_ns(); t0=time.monotonic()
    res=None
    try:
        p=subprocess.run(cmd,capture_output=True,text=True,timeout=timeout+30)
        open(f"{work}/hsload-{w}-{pair}.json","w").write(p.stdout+p.stderr)
        res=json.loads(p.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired,ValueError,IndexError) as e:
        print(f"warning: bulwark-hsload against {w} failed: {e!r}",file=sys.stderr)
    c1=cpu_ticks(); n1=cpu_ns(); total_wall=time.monotonic()-t0
    time.sleep(6)
    n2=cpu_ns()
    res=res or {}
    completed=res.get("completed",0); failed=res.get("failed",n); wall=res.get("wall_s") or 0.0
    cs=cpu_s(c0,c1,n0,n1)
    dg=res.get("datagrams",{})
    ms=lambda k: res.get(k)/1e3 if res.get(k) is not None else None
    print(json.dumps({"server":w,"pair":pair,"kind":"handshake","hs_gen":"own","hs_clients":n,
      "hs_concurrency":conc,"hs_completed":completed,"hs_failed":failed,"hs_failures":res.get("failures",{}),
      "hs_wall_s":wall,"hs_total_wall_s":total_wall,
      "hs_per_s":completed/wall if (completed and wall>0) else None,
      "hs_server_cpu_ticks":c1-c0,"hs_server_cpu_ns":n1-n0,"hs_server_cpu_s":cs,
      "hs_server_cpu_ms_per_handshake":cs*1e3/completed if completed else None,
      "hs_server_cpu_ms_per_handshake_teardown":(n2-n0)/1e6/completed if (completed and n2>n0) else None,
      "hs_server_cpu_util":cs/wall if wall>0 else None,
      "hs_gen_cpu_s":res.get("gen_cpu_s"),"hs_gen_cpu_ms_per_handshake":res.get("gen_cpu_ms_per_handshake"),
      "hs_latency_median_s":ms("latency_median_ms"),"hs_latency_p90_s":ms("latency_p90_ms"),
      "hs_latency_max_s":ms("latency_max_ms"),"hs_exit":res.get("exit"),
      "hs_control_retransmits":dg.get("control_retransmits"),"hs_push_requests":dg.get("push_requests")}))
    sys.exit(0)
profile=f"{work}/pki/clients/client1.ovpn"
DONE="Initialization Sequence Completed"
def stop(procs):
    for p,_ in procs:
        if p.poll() is None: p.send_signal(signal.SIGTERM)
    end=time.monotonic()+5
    for p,_ in procs:
        try: p.wait(timeout=max(0.1,end-time.monotonic()))
        except subprocess.TimeoutExpired: p.kill(); p.wait(timeout=5)
c0=cpu_ticks(); n0=cpu_ns(); t0=time.monotonic()
completed=0; failed=0; hs_wall=0.0; lat=[]; c1=c0; n1=n0; i=0
while i<n:
    k=min(batch,n-i); procs=[]
    tb=time.monotonic()
    for j in range(i,i+k):
        log=f"{work}/hs-{w}-{pair}-{j}.log"
        # the client1 profile as it is, at verb 3 (the line we wait for), its own tun device bwhsJ in ns C
        p=subprocess.Popen(["ip","netns","exec",C,"openvpn","--config",profile,"--verb","3",
                            "--dev",f"bwhs{j}","--dev-type","tun"],
                           stdout=open(log,"w"),stderr=subprocess.STDOUT,stdin=subprocess.DEVNULL)
        procs.append((p,log))
    pending={log:p for p,log in procs}; last=tb; gone=0
    while pending and time.monotonic()-tb<timeout:
        for log,p in list(pending.items()):
            exited=p.poll() is not None
            try: txt=open(log).read()
            except OSError: txt=""
            if DONE in txt:
                now=time.monotonic(); del pending[log]; completed+=1; lat.append(now-tb); last=now
            elif exited:            # gave up (e.g. TLS error) without completing: failed, no need to wait
                del pending[log]; gone+=1
        if pending: time.sleep(0.01)
    c1=cpu_ticks(); n1=cpu_ns()   # server CPU up to the end of this batch's handshakes (idle between batches)
    failed+=len(pending)+gone; hs_wall+=last-tb
    stop(procs)
    i+=k
total_wall=time.monotonic()-t0
cs=cpu_s(c0,c1,n0,n1)
lat.sort()
print(json.dumps({"server":w,"pair":pair,"kind":"handshake","hs_gen":"stock","hs_clients":n,"hs_batch":batch,
  "hs_completed":completed,"hs_failed":failed,"hs_wall_s":hs_wall,"hs_total_wall_s":total_wall,
  "hs_per_s":completed/hs_wall if (completed and hs_wall>0) else None,
  "hs_server_cpu_ticks":c1-c0,"hs_server_cpu_ns":n1-n0,"hs_server_cpu_s":cs,
  "hs_server_cpu_ms_per_handshake":cs*1e3/completed if completed else None,
  "hs_server_cpu_util":cs/hs_wall if hs_wall>0 else None,
  "hs_latency_median_s":lat[len(lat)//2] if lat else None,"hs_latency_p90_s":q(lat,0.9),
  "hs_latency_max_s":lat[-1] if lat else None}))
PY
    kill_ns_procs
}

RESULTS="$WORK/results.jsonl"
for i in $(seq 1 "$PAIRS"); do
    run_one A "$i" >> "$RESULTS"
    run_one B "$i" >> "$RESULTS"
    if [ "$HANDSHAKES" != 0 ]; then
        run_hs A "$i" >> "$RESULTS"
        run_hs B "$i" >> "$RESULTS"
    fi
    echo "pair $i done" >&2
done
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT="bench/results/$STAMP"
python3 - "$RESULTS" "$OUT" "$PAIRS" "$SECS" "$OFFLOAD" "$UDP_RATE" "$PPS" "$HANDSHAKES" "$HS_BATCH" "$SEG" \
    "$HS_GEN" "$HS_CONC" "$HS_LIMITS" <<'PY'
import json,sys,statistics
rows=[json.loads(l) for l in open(sys.argv[1])]
out,pairs,secs,offload=sys.argv[2],sys.argv[3],sys.argv[4],sys.argv[5]
udp_rate,pps,hs,hs_batch,seg=sys.argv[6],int(sys.argv[7]),int(sys.argv[8]),int(sys.argv[9]),int(sys.argv[10])
hs_gen,hs_conc,hs_limits=sys.argv[11],int(sys.argv[12]),sys.argv[13]
# one merged record per (pair, server): the data run and the handshake run of a pair are compared A vs B
merged={}
for r in rows:
    m=merged.setdefault((r["pair"],r["server"]),{}); m.update(r)
pairl=sorted({p for p,_ in merged})
A=[merged.get((p,"A"),{}) for p in pairl]; B=[merged.get((p,"B"),{}) for p in pairl]
keys=["up_mbps","down_mbps","server_cpu_s_per_gb","cpu_us_per_packet","cpu_us_per_segment","system_cpu_s_per_gb",
      "syscalls_per_packet","syscalls_per_segment",
      "udp_mbps","udp_server_cpu_s_per_gb","udp_cpu_us_per_packet","udp_cpu_us_per_segment","udp_system_cpu_s_per_gb","udp_loss_pct",
      "pps_sent_per_s","pps_cpu_us_per_packet","pps_system_cpu_us_per_packet","pps_loss_pct",
      "hs_per_s","hs_server_cpu_ms_per_handshake","hs_server_cpu_ms_per_handshake_teardown","hs_server_cpu_util",
      "hs_gen_cpu_ms_per_handshake","hs_latency_median_s","hs_failed"]
summary={}
for k in keys:
    av=[a[k] for a in A if a.get(k) is not None]; bv=[b[k] for b in B if b.get(k) is not None]
    if not av and not bv: continue
    s={"A_median":statistics.median(av) if av else None,"B_median":statistics.median(bv) if bv else None}
    ratios=[b[k]/a[k] for a,b in zip(A,B) if a.get(k) and b.get(k) is not None]
    if ratios: s.update({"median_ratio_B_over_A":statistics.median(ratios),"min":min(ratios),"max":max(ratios)})
    summary[k]=s
not_measured={}
if udp_rate=="0": not_measured["fixed_rate_udp"]="skipped (--udp-rate 0)"
if pps==0: not_measured["small_packet_fixed_pps"]="skipped (--pps 0)"
if hs==0: not_measured["handshake_rate"]="skipped (--handshakes 0)"
doc={"pairs":int(pairs),"secs":int(secs),"veth_offload":offload,"udp_rate":udp_rate,"udp_payload":1400,
     "pps":pps,"pps_payload":64,"handshakes":hs,"hs_gen":hs_gen,"hs_concurrency":hs_conc,"hs_batch":hs_batch,
     "hs_server_limits":hs_limits,"segment_bytes":seg,
     "runs":rows,"summary":summary,"not_measured":not_measured}
json.dump(doc,open(out+".json","w"),indent=1)
def f(x):
    if x is None: return "–"
    if abs(x)>=100: return f"{x:.1f}"
    if abs(x)>=1 or x==0: return f"{x:.2f}"
    return f"{x:.3g}"
lines=["| metric | OpenVPN 2.6 (A, median) | Bulwark (B, median) | B/A median | min | max |","|---|---|---|---|---|---|"]
for k in keys:
    if k not in summary: lines.append(f"| {k} | not measured | | | | |"); continue
    s=summary[k]
    lines.append(f"| {k} | {f(s['A_median'])} | {f(s['B_median'])} | {f(s.get('median_ratio_B_over_A'))} | {f(s.get('min'))} | {f(s.get('max'))} |")
udp_d=f"iperf3 -u -b {udp_rate} -l 1400, {secs} s client→server" if udp_rate!="0" else "skipped"
pps_d=f"iperf3 -u -l 64 at {pps} packets/s, {secs} s client→server" if pps else "skipped"
if not hs: hs_d="skipped"
elif hs_gen=="own": hs_d=f"{hs} handshakes per run by bench/hsload (bulwark-hsload), {hs_conc} in flight, each ended with EXIT"
else: hs_d=f"{hs} stock clients per run, {hs_batch} in parallel"
if hs: hs_d+=f" (server with duplicate-cn and, for A and B alike, {hs_limits})"
foot=(f"\n\n{pairs} interleaved pairs, {secs} s iperf3 each direction; veth: {offload}\n"
      f"udp_*: {udp_d}; pps_*: {pps_d}; *_per_segment: per {seg} bytes through tun0; hs_*: {hs_d}\n")
open(out+".md","w").write("\n".join(lines)+foot)
print("\n".join(lines)+foot)
PY
echo "results: $OUT.json $OUT.md"
