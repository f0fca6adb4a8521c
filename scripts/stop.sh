#!/usr/bin/env bash
# Stops one service of the local stack: `scripts/stop.sh kafka|kafka-9|redis|postgres` (kafka-9: kill -9, as a crash).
# `scripts/up.sh` starts again whatever is not running. Used by `tally chaos`.
source "$(dirname "$0")/lib.sh"

case "${1:-}" in
    kafka) stop_kafka ;;
    kafka-9) stop_kafka -9 ;;
    redis) stop_redis ;;
    postgres) stop_postgres ;;
    *) die "usage: $0 kafka|kafka-9|redis|postgres" ;;
esac
