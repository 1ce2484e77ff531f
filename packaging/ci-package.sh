#!/usr/bin/env bash
# CI packaging step, run by .ci/run after the test step (as root, on the CI machine, which it
# changes: it installs the package). Builds the release binaries and the .deb, checks that the
# committed bulwark.conf(5) is what the generator makes, lints the .deb, installs it, verifies the
# installed unit, and runs tests/tests/packaging.rs with BULWARK_INSTALLED=1, which starts the
# INSTALLED /usr/sbin/bulwark the way the unit's ExecStart= would (in a network namespace, under
# the unit's capability bounding set and no_new_privs) and connects a stock OpenVPN client.
# Prints the time of every step; packaging/README.md records the measurements.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:/usr/local/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

start=$SECONDS
last=$SECONDS
step() {
    echo "== packaging: $1 (previous step $((SECONDS - last)) s, total $((SECONDS - start)) s)"
    last=$SECONDS
}

step "tools: lintian, systemd (systemd-analyze, sysusers, tmpfiles), logrotate, cargo-deb"
apt-get install -y --no-install-recommends lintian systemd logrotate
if ! command -v cargo-deb >/dev/null 2>&1; then
    cargo install cargo-deb --version 3.8.0 --locked
fi
cargo deb --version

step "release build of the three binaries"
cargo build --release -p bulwark-daemon -p bulwark-worker -p bulwark-mgmt --bins

step "bulwark.conf(5) is current"
cargo run -q -p bulwark-mangen -- --check packaging/man

step ".deb (cargo deb --no-build)"
rm -f target/debian/bulwark_*.deb target/debian/bulwark-dbgsym_*.ddeb
cargo deb -p bulwark-daemon --no-build
deb=$(ls target/debian/bulwark_*.deb)
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"

step "lintian (every remaining tag is justified in packaging/README.md)"
lintian --display-info --fail-on error,warning \
    --suppress-tags initial-upload-closes-no-bugs \
    "$deb"

step "install"
apt-get install -y --no-install-recommends "./$deb"
getent passwd bulwark

step "installed unit: systemd-analyze verify, security, logrotate syntax"
systemd-analyze verify /usr/lib/systemd/system/bulwark-server@.service
# exposure level on the 0-100 scale: fail above 3.5
systemd-analyze security --offline=yes --threshold=35 \
    /usr/lib/systemd/system/bulwark-server@.service | tail -n 1
systemd-analyze security --offline=yes /usr/lib/systemd/system/openvpn-server@.service | tail -n 1
logrotate --debug /etc/logrotate.d/bulwark

step "installed daemon + stock client (tests/tests/packaging.rs, BULWARK_INSTALLED=1)"
# --workspace keeps the feature resolution of the test step, so nothing is rebuilt
BULWARK_INSTALLED=1 cargo test --workspace --test packaging -- --test-threads=1

step "done"
