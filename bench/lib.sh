# shellcheck shell=bash
# Shared set-up of the bench scripts (sourced; bash). Expects $WORK, $S, $C to be set.
#   bench_netns_up NET      two namespaces $S/$C joined by veth0/veth1, addresses 10.99.NET.1/.2
#   bench_netns_down        kill everything left in $S/$C, delete them, remove $WORK
#   bench_pki NET           `bulwark init` into $WORK/pki, client1 profile pointed at 10.99.NET.1
#   bench_tunnel_up CONF    Bulwark ($BW) on CONF in $S, the stock client1 in $C, wait (≤ 15 s) for a
#                           ping through the tunnel, start an iperf3 server in $S; exits 1 on failure
#   bench_hs_conf OUT       the handshake-bench server config: $WORK/pki/server.conf with a /16 pool,
#                           duplicate-cn, connect-freq-initial 100000 10 and max-clients 10000 (limits
#                           raised so that they are not what is measured), written to OUT
#   bench_hsload_pki DIR    client1's inline ca/cert/key/tls-crypt as PEM files in DIR (for hsload)
bench_netns_up() {
    ip netns add "$S"; ip netns add "$C"
    ip -n "$S" link add veth0 type veth peer name veth1 netns "$C"
    ip -n "$S" addr add "10.99.$1.1/24" dev veth0; ip -n "$C" addr add "10.99.$1.2/24" dev veth1
    for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
    ip -n "$S" link set veth0 up; ip -n "$C" link set veth1 up
}
bench_netns_down() {
    for ns in "$S" "$C"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
bench_pki() {
    "$BW" init "$WORK/pki" >/dev/null
    sed -i "s/^remote .*/remote 10.99.$1.1 1194/" "$WORK/pki/clients/client1.ovpn"
    echo "verb 1" >> "$WORK/pki/clients/client1.ovpn"
}
bench_hs_conf() {
    sed 's/^server 10\.8\.0\.0 255\.255\.255\.0$/server 10.8.0.0 255.255.0.0/' "$WORK/pki/server.conf" > "$1"
    grep -q '^server 10.8.0.0 255.255.0.0$' "$1" || { echo "$1: no server line to widen" >&2; exit 1; }
    printf '%s\n' "duplicate-cn" "connect-freq-initial 100000 10" "max-clients 10000" >> "$1"
}
bench_hsload_pki() {
    mkdir -p "$1"
    local b
    for b in ca cert key tls-crypt; do
        sed -n "/^<$b>/,/^<\/$b>/p" "$WORK/pki/clients/client1.ovpn" | sed '1d;$d' > "$1/$b.pem"
        [ -s "$1/$b.pem" ] || { echo "client1.ovpn has no inline <$b>" >&2; exit 1; }
    done
}
bench_tunnel_up() {
    ip netns exec "$S" "$BW" --config "$1" > "$WORK/server.log" 2>&1 &
    sleep 1.5
    ip netns exec "$C" openvpn --config "$WORK/pki/clients/client1.ovpn" > "$WORK/client.log" 2>&1 &
    local up=""
    for _ in $(seq 1 30); do
        if ip netns exec "$C" ping -c1 -W1 10.8.0.1 >/dev/null 2>&1; then up=1; break; fi
        sleep 0.5
    done
    [ -n "$up" ] || { echo "tunnel did not come up" >&2; cat "$WORK/server.log" >&2; exit 1; }
    ip netns exec "$S" iperf3 -s -D -p 5201 >/dev/null 2>&1; sleep 0.5
}
