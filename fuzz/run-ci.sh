#!/usr/bin/env bash
# Runs every fuzz target briefly (SECONDS_PER_TARGET, default 20) from the committed seeds; a crash fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${SECONDS_PER_TARGET:-20}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in packet_decode control_unwrap km2_parse data_decrypt control_messages mgmt_command config_lexer tun_offload; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t (${secs}s)"
    cargo fuzz run -O "$t" "corpus/$t" "corpus-seed/$t" -- -max_total_time="$secs" -print_final_stats=1 2>&1 \
        | grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|==|SUMMARY|Done)" || true
    # cargo fuzz exits non-zero on a crash; pipefail propagates it through the pipeline above only for
    # the last command, so check artifacts explicitly
    if compgen -G "artifacts/$t/*" >/dev/null; then
        echo "fuzz target $t found a crash:" >&2
        ls "artifacts/$t" >&2
        exit 1
    fi
done
