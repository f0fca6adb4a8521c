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

if [ ! -x "$TANSU_BIN" ]; then
    say "building the tansu $TANSU_VERSION broker (with Tally's fixes, ADR 0009) into $TALLY_CACHE (10-15 minutes, once per machine)"
    "$REPO/scripts/tansu/build.sh"
fi
say "tansu:      $TANSU_BIN"

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest from crates.io (the test runner of make test)"
    cargo install cargo-nextest --locked --quiet
fi
