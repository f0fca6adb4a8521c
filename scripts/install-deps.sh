#!/usr/bin/env bash
# Installs what the local stack needs, once: PostgreSQL and Redis from the OS packages, the tansu broker from
# crates.io (with two fixes to its storage: scripts/tansu/README.md) into a cache outside the work tree.
# Idempotent: prints what it found or installed.
source "$(dirname "$0")/lib.sh"

apt_packages=()
# A C toolchain and make: librdkafka (bundled by the rdkafka crate) builds from C sources.
{ command -v cc && command -v make && command -v c++; } >/dev/null || apt_packages+=(build-essential)
command -v perl >/dev/null || apt_packages+=(perl)
[ -n "$(pg_bindir || true)" ] || apt_packages+=(postgresql)
command -v redis-server >/dev/null || apt_packages+=(redis-server)
command -v unzip >/dev/null || apt_packages+=(unzip)  # the ECB history fixture is a zip (reference tests)
# The audit log's independent checker (tools/audit/verify.go, its test): Go's x/mod sumdb packages, offline.
command -v go >/dev/null || apt_packages+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb ] || apt_packages+=(golang-golang-x-mod-dev)
if [ "${#apt_packages[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root (or sudo) to apt-get install ${apt_packages[*]}"
    say "installing ${apt_packages[*]} from the OS packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    # The packages start their own system-wide services; Tally runs private ones, so stop and disable those.
    for svc in redis-server postgresql; do
        { service "$svc" stop; update-rc.d "$svc" disable; systemctl disable "$svc"; } >/dev/null 2>&1 || true
    done
fi
say "postgresql: $("$(pg_bindir)/postgres" --version)"
say "redis:      $(redis-server --version | cut -d' ' -f1-3)"
say "go:         $(go version | cut -d' ' -f3) (audit export checker)"

if [ ! -x "$TANSU_BIN" ]; then
    say "building the tansu $TANSU_VERSION broker (with Tally's fixes, ADR 0009) into $TALLY_CACHE (10-15 minutes, once per machine)"
    "$REPO/scripts/tansu/build.sh"
fi
say "tansu:      $TANSU_BIN"

# DuckDB's engine, prebuilt, once per machine; the repository's .tally/lib points at it (cargo's DUCKDB_LIB_DIR, and
# the RUNPATH of every binary and test that links it: .cargo/config.toml, crates/adapters/duckdb/build.rs).
duckdb_ok() { [ -f "$DUCKDB_DIR/libduckdb.so" ] && echo "$DUCKDB_SHA256  $DUCKDB_DIR/libduckdb.so" | sha256sum -c --status; }
if ! duckdb_ok; then
    command -v npm >/dev/null || die "npm is needed once to fetch DuckDB's prebuilt engine ($DUCKDB_NPM); apt-get install npm"
    say "fetching DuckDB's prebuilt engine ($DUCKDB_NPM, ~24 MB) into $DUCKDB_DIR"
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$DUCKDB_NPM" >/dev/null && tar xzf ./*.tgz) || die "npm pack $DUCKDB_NPM failed"
    mkdir -p "$DUCKDB_DIR"
    mv "$tmp/package/libduckdb.so" "$DUCKDB_DIR/libduckdb.so.part" && mv "$DUCKDB_DIR/libduckdb.so.part" "$DUCKDB_DIR/libduckdb.so"
    cp "$tmp/package/LICENSE" "$DUCKDB_DIR/LICENSE" 2>/dev/null || true
    rm -rf "$tmp"
    duckdb_ok || { rm -f "$DUCKDB_DIR/libduckdb.so"; die "libduckdb.so does not have the sha256 DUCKDB.md names"; }
fi
mkdir -p "$REPO/.tally"
ln -sfn "$DUCKDB_DIR" "$REPO/.tally/lib"
say "duckdb:     $DUCKDB_DIR/libduckdb.so (linked as .tally/lib)"

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest from crates.io (the test runner of make test)"
    cargo install cargo-nextest --locked --quiet
fi
