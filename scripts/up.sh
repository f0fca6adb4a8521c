#!/usr/bin/env bash
# Starts the local stack on 127.0.0.1: PostgreSQL (a private cluster), Redis, the tansu Kafka-API broker.
# Idempotent: a service that is already running is reported, not restarted.
source "$(dirname "$0")/lib.sh"
"$(dirname "$0")/install-deps.sh" >/dev/null

mkdir -p "$TALLY_DATA"

# --- PostgreSQL ---------------------------------------------------------------------------------------------------
PGDATA="$(pg_data)"
BIN="$(pg_bindir)"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA"; fi
    chmod 700 "$PGDATA"
    pg_as "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$TALLY_DATA/initdb.log" 2>&1 \
        || die "initdb failed, see $TALLY_DATA/initdb.log"
fi
# track_commit_timestamp: latency figures (demo, `tally bench ledger`) measure to each booking's commit
# (pg_xact_commit_timestamp), not to its transaction's start. wal_level=logical: `tally relay` reads the payments
# API's outbox through a logical replication slot (pgoutput).
PG_OPTS="-c listen_addresses=127.0.0.1 -p $TALLY_PG_PORT -k $PGDATA -c fsync=on -c max_connections=200 -c track_commit_timestamp=on -c wal_level=logical -c max_replication_slots=64 -c max_wal_senders=16"
psql_admin() { pg_as psql -h 127.0.0.1 -p "$TALLY_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"; }
if pg_as "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    if [ "$(psql_admin "show track_commit_timestamp")" = on ] && [ "$(psql_admin "show wal_level")" = logical ]; then
        say "postgres  already running  $(pg_url)  data $PGDATA"
    else
        pg_as "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 -m fast restart -o "$PG_OPTS" >/dev/null \
            || die "postgres did not restart, see $PGDATA/server.log"
        say "postgres  restarted        $(pg_url)  data $PGDATA (now with track_commit_timestamp, wal_level=logical)"
    fi
else
    pg_as "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 30 start -o "$PG_OPTS" >/dev/null \
        || die "postgres did not start, see $PGDATA/server.log"
    say "postgres  started          $(pg_url)  data $PGDATA"
fi
[ "$(psql_admin "select 1 from pg_roles where rolname='$PG_USER'")" = 1 ] || psql_admin "create role $PG_USER login createdb replication"
# The relay's replication slot needs REPLICATION (a role created before it existed gets it here).
[ "$(psql_admin "select rolreplication from pg_roles where rolname='$PG_USER'")" = t ] || psql_admin "alter role $PG_USER replication"
[ "$(psql_admin "select 1 from pg_database where datname='$PG_DB'")" = 1 ] || psql_admin "create database $PG_DB owner $PG_USER"

# --- Redis --------------------------------------------------------------------------------------------------------
if redis-cli -h 127.0.0.1 -p "$TALLY_REDIS_PORT" ping >/dev/null 2>&1; then
    say "redis     already running  $(redis_url)"
else
    mkdir -p "$TALLY_DATA/redis"
    redis-server --bind 127.0.0.1 --port "$TALLY_REDIS_PORT" --dir "$TALLY_DATA/redis" --daemonize yes \
        --pidfile "$TALLY_DATA/redis/redis.pid" --logfile "$TALLY_DATA/redis/redis.log" --save "" --appendonly no
    wait_port "$TALLY_REDIS_PORT" redis
    say "redis     started          $(redis_url)"
fi

# --- tansu (Kafka API) --------------------------------------------------------------------------------------------
KDIR="$TALLY_DATA/kafka"
mkdir -p "$KDIR"
# A broker of this data folder whose pid file was lost: adopt it rather than start a second one.
if ! { [ -f "$KDIR/tansu.pid" ] && kill -0 "$(cat "$KDIR/tansu.pid")" 2>/dev/null; }; then
    for pid in $(pgrep -f "tansu broker --listener-url tcp://127.0.0.1:$TALLY_KAFKA_PORT " || true); do
        if [ "$(readlink "/proc/$pid/cwd")" = "$KDIR" ]; then echo "$pid" >"$KDIR/tansu.pid"; fi
    done
fi
if [ -f "$KDIR/tansu.pid" ] && kill -0 "$(cat "$KDIR/tansu.pid")" 2>/dev/null && port_open "$TALLY_KAFKA_PORT"; then
    say "kafka     already running  $(kafka_brokers)  (tansu pid $(cat "$KDIR/tansu.pid"))"
else
    port_open "$TALLY_KAFKA_PORT" && die "127.0.0.1:$TALLY_KAFKA_PORT is taken by another process; set TALLY_KAFKA_PORT"
    # The sqlite path is relative to the working directory: start from the data folder.
    # Every fd of the background process is redirected, so that a caller reading our stdout is not held open.
    (cd "$KDIR" && exec setsid "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$TALLY_KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$TALLY_KAFKA_PORT" \
        --storage-engine "sqlite://tansu.db") </dev/null >>"$KDIR/tansu.log" 2>&1 &
    echo $! >"$KDIR/tansu.pid"
    wait_port "$TALLY_KAFKA_PORT" tansu
    say "kafka     started          $(kafka_brokers)  (tansu pid $(cat "$KDIR/tansu.pid"), data $KDIR)"
fi

cat >"$TALLY_DATA/env" <<ENV
TALLY__POSTGRES__URL=$(pg_url)
TALLY__REDIS__URL=$(redis_url)
TALLY__KAFKA__BROKERS=$(kafka_brokers)
TALLY__ARCHIVE__LOCATION=$TALLY_DATA/archive
TALLY__AUDIT__KEY_FILE=$TALLY_DATA/audit/signing.key
TALLY_TANSU_BIN=$TANSU_BIN
ENV
