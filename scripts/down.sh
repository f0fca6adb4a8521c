#!/usr/bin/env bash
# Stops the local stack. Idempotent: a service that is not running is reported as such. Data is kept.
source "$(dirname "$0")/lib.sh"

KDIR="$TALLY_DATA/kafka"
if [ -f "$KDIR/tansu.pid" ] && kill -0 "$(cat "$KDIR/tansu.pid")" 2>/dev/null; then
    pid="$(cat "$KDIR/tansu.pid")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$KDIR/tansu.pid"
    say "kafka     stopped"
else
    say "kafka     not running"
fi

if redis-cli -h 127.0.0.1 -p "$TALLY_REDIS_PORT" ping >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p "$TALLY_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    say "redis     stopped"
else
    say "redis     not running"
fi

PGDATA="$(pg_data)"
BIN="$(pg_bindir || true)"
if [ -n "$BIN" ] && [ -f "$PGDATA/PG_VERSION" ] && pg_as "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    pg_as "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    say "postgres  stopped"
else
    say "postgres  not running"
fi
