# Shared settings of the local stack scripts. Sourced, not run.
# Everything listens on 127.0.0.1 only. Every value can be overridden from the environment.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Caches that outlive a work tree (the broker binary, cargo output).
TALLY_CACHE="${TALLY_CACHE:-$HOME/.cache/tally}"
# Where the services keep their data: a folder of this checkout by default.
TALLY_DATA="${TALLY_DATA:-$REPO/.tally}"

TALLY_PG_PORT="${TALLY_PG_PORT:-54329}"
TALLY_REDIS_PORT="${TALLY_REDIS_PORT:-63799}"
TALLY_KAFKA_PORT="${TALLY_KAFKA_PORT:-9092}"

TANSU_VERSION="0.6.0"
# tansu 0.6.0 with Tally's two fixes to its storage (scripts/tansu/README.md); a new change gets a new build name.
TANSU_BUILD="tally.1"
TANSU_BIN="$TALLY_CACHE/tansu-$TANSU_VERSION-$TANSU_BUILD/bin/tansu"
# DuckDB, prebuilt (../shared/DUCKDB.md): libduckdb.so from DuckDB's npm package, linked by crates/adapters/duckdb.
DUCKDB_NPM="@duckdb/node-bindings-linux-x64@1.5.6-r.1"
DUCKDB_SHA256="3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633"
DUCKDB_DIR="$TALLY_CACHE/duckdb-1.5.6"

PG_DB="tally"
PG_USER="tally"

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The newest PostgreSQL server installed from the OS packages.
pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$d" ] && [ -x "$d/postgres" ] && printf '%s' "$d"
}

# PostgreSQL refuses to run as root: as root, run its tools as the `postgres` OS user, in a data folder that user
# can reach (a checkout under /root is not reachable, so fall back to /var/lib/tally/<checkout hash>).
pg_as() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_data() {
    local dir="$TALLY_DATA/pg"
    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$TALLY_DATA"
        if ! runuser -u postgres -- test -x "$TALLY_DATA" 2>/dev/null; then
            dir="/var/lib/tally/$(printf '%s' "$TALLY_DATA" | sha1sum | cut -c1-12)/pg"
        fi
    fi
    printf '%s' "$dir"
}

pg_url() { printf 'postgres://%s@127.0.0.1:%s/%s' "$PG_USER" "$TALLY_PG_PORT" "$PG_DB"; }
redis_url() { printf 'redis://127.0.0.1:%s/' "$TALLY_REDIS_PORT"; }
kafka_brokers() { printf '127.0.0.1:%s' "$TALLY_KAFKA_PORT"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port="$1" what="$2" tries=100
    until port_open "$port"; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || die "$what did not open 127.0.0.1:$port (see its log under $TALLY_DATA)"
        sleep 0.1
    done
}

# Stop one service (idempotent: one that is not running is reported as such). Data is kept.
stop_kafka() {
    local kdir="$TALLY_DATA/kafka" pid
    if [ -f "$kdir/tansu.pid" ] && kill -0 "$(cat "$kdir/tansu.pid")" 2>/dev/null; then
        pid="$(cat "$kdir/tansu.pid")"
        if [ "${1:-}" = "-9" ]; then kill -9 "$pid"; else kill "$pid"; fi
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        rm -f "$kdir/tansu.pid"
        say "kafka     stopped"
    else
        say "kafka     not running"
    fi
}

stop_redis() {
    if redis-cli -h 127.0.0.1 -p "$TALLY_REDIS_PORT" ping >/dev/null 2>&1; then
        redis-cli -h 127.0.0.1 -p "$TALLY_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        say "redis     stopped"
    else
        say "redis     not running"
    fi
}

stop_postgres() {
    local pgdata bin
    pgdata="$(pg_data)"
    bin="$(pg_bindir || true)"
    if [ -n "$bin" ] && [ -f "$pgdata/PG_VERSION" ] && pg_as "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        pg_as "$bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
        say "postgres  stopped"
    else
        say "postgres  not running"
    fi
}
