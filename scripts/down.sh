#!/usr/bin/env bash
# Stops the local stack. Idempotent: a service that is not running is reported as such. Data is kept.
source "$(dirname "$0")/lib.sh"

stop_kafka
stop_redis
stop_postgres
