#!/usr/bin/env bash
# Runs schemathesis (PyPI) with its default checks against a running `tally api` (issue 17 §7): a fresh database on
# the local stack, the PSP simulator's Stripe as the PSP, a merchant and a key made for the run. Exit code: 0 clean,
# 1 schemathesis found failures or `tally api` logged errors, 2 something could not be set up.
#   scripts/schemathesis.sh [extra schemathesis arguments, e.g. --max-examples 200 --seed 7]
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tally/target}"
VERSION=4.32.5
VENV="$HOME/.cache/tally/schemathesis-$VERSION"
TALLY="$CARGO_TARGET_DIR/debug/tally"
say() { printf 'schemathesis: %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/schemathesis" ]; then
    say "installing schemathesis $VERSION into $VENV"
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"; } || { say "install failed"; exit 2; }
fi
scripts/up.sh >/dev/null || { say "the stack did not start"; exit 2; }
set -a; source .tally/env || exit 2; set +a
cargo build --quiet --bin tally || exit 2

RUN="$(mktemp -d /tmp/tally-schemathesis.XXXXXX)"
DB="tally_st_$$"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    psql "$TALLY__POSTGRES__URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || say "could not drop $DB"
    rm -rf "$RUN"
}
trap cleanup EXIT
psql "$TALLY__POSTGRES__URL" -qc "CREATE DATABASE $DB" >/dev/null || exit 2
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
API_PORT=$(port) && SIM_PORT=$(port) || exit 2
cat >"$RUN/tally.toml" <<TOML
[postgres]
url = "${TALLY__POSTGRES__URL%/*}/$DB"
[api]
listen = "127.0.0.1:$API_PORT"
encryption_keys = [{ id = "k1", key = "$(head -c32 /dev/urandom | base64)" }]
[api.stripe]
base_url = "http://127.0.0.1:$SIM_PORT"
secret_key = "sk_test_schemathesis"
TOML
# The file is the whole configuration: the stack's TALLY__ variables would override it. An array, not a function,
# so that `$!` below is tally's own pid.
UNSET=(); for v in $(env | grep -o '^TALLY__[A-Z_]*'); do UNSET+=(-u "$v"); done
T=(env "${UNSET[@]}" TALLY_LOG=warn "$TALLY" --config "$RUN/tally.toml")

"${T[@]}" psp-sim --listen "127.0.0.1:$SIM_PORT" >"$RUN/sim.log" 2>&1 & PIDS+=($!)
"${T[@]}" merchants create --id m_schemathesis --psps stripe --rate 100000 >/dev/null || exit 2
KEY=$("${T[@]}" merchants create-key --merchant m_schemathesis 2>/dev/null) || exit 2
"${T[@]}" api >"$RUN/api.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null || { say "tally api did not start:"; cat "$RUN/api.log" >&2; exit 2; }

say "running against http://127.0.0.1:$API_PORT (tally api) and :$SIM_PORT (psp-sim)"
# The key through the spec's security scheme (not a fixed header), so that "Authorization missing → 401" is tested.
printf '[auth.openapi.bearer]\nbearer = "%s"\n' "$KEY" >"$RUN/schemathesis.toml"
# From the run's directory: schemathesis keeps a cache in the working directory.
(cd "$RUN" && SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$ROOT/scripts" \
    "$VENV/bin/schemathesis" --config-file "$RUN/schemathesis.toml" run "http://127.0.0.1:$API_PORT/openapi.json" "$@")
status=$?
for log in api sim; do
    if grep -q ERROR "$RUN/$log.log"; then
        say "$log logged errors:"; grep ERROR "$RUN/$log.log" | head -20 >&2
        [ "$status" -eq 0 ] && status=1
    fi
done
exit $status
