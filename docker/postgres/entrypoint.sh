#!/bin/bash
# Starts PostgreSQL as user postgres, creating the cluster on first start from
# POSTGRES_USER (default postgres), POSTGRES_PASSWORD (required) and POSTGRES_DB (default:
# the user's name), as the official image does. `postgres-entrypoint postgres -c a=b` passes
# settings on; any other command runs as given.
set -euo pipefail

if [ "${1:-}" != postgres ]; then
    exec "$@"
fi
shift

if [ "$(id -u)" = 0 ]; then
    # A fresh named volume may come up owned by root: hand it to postgres, then drop root.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres-entrypoint: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # The first start listens on a private socket only, so health checks (pg_isready on the
    # default socket) and clients wait until the database exists.
    init_socket=$(mktemp -d)
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -k $init_socket" start >/dev/null
    if [ "$db" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -q -h "$init_socket" -U "$user" -d postgres \
            -c "CREATE DATABASE \"$db\""
    fi
    pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    rm -rf "$init_socket"
    echo "postgres-entrypoint: created the cluster with user $user and database $db"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
