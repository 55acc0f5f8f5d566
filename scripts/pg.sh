#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests: initdb into a fresh directory
# under /tmp, trust authentication, loopback only on a free port, its Unix
# socket inside that directory; never the machine's own cluster (Debian's
# package may have created one; it is neither started nor used).
#
#   scripts/pg.sh run CMD...        start a cluster, run CMD with
#                                   POSTDESK_TEST_PG set, stop it (also when
#                                   CMD fails or is interrupted); CMD's status
#   eval "$(scripts/pg.sh start)"   start one and print its variables
#   scripts/pg.sh stop DIR          stop that one ($POSTDESK_PG_DIR)
#   source scripts/pg.sh            pg_start / pg_stop, as scripts/test.sh does
#
# What a started cluster sets:
#   POSTDESK_TEST_PG      postgres://postgres@127.0.0.1:PORT/  (the tests'
#                         switch: each test desk gets its own database there)
#   POSTDESK_TEST_PG_BIN  the server's bin dir (psql, createdb, pg_ctl)
#   POSTDESK_PG_DIR       the cluster's directory (data/, log, socket)
#
# initdb and postgres refuse to run as root: as root they run as the
# `postgres` user Debian's package creates, in a directory it owns; anyone
# else runs them as themselves. The superuser is named `postgres` either way.
# The cluster is for tests and is thrown away: fsync is off (a killed
# postdesk is what the tests exercise, never a killed machine; PostgreSQL's
# commits stay synchronous to the server process).

pg_log() { printf 'pg.sh: %s\n' "$*" >&2; }

# The newest installed server: /usr/lib/postgresql/<major>/bin.
pg_bindir() {
    if [ -n "${POSTDESK_TEST_PG_BIN:-}" ] && [ -x "$POSTDESK_TEST_PG_BIN/pg_ctl" ]; then
        printf '%s\n' "$POSTDESK_TEST_PG_BIN"
        return 0
    fi
    local d
    d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [ -z "$d" ] || [ ! -x "$d/initdb" ] || [ ! -x "$d/pg_ctl" ]; then
        pg_log "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        return 1
    fi
    printf '%s\n' "$d"
}

# Runs a server program as the cluster's owner.
pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a cluster; sets and exports the variables above. Safe to call once
# per shell; pg_stop undoes it.
pg_start() {
    local bin dir port try
    bin=$(pg_bindir) || return 1
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        pg_log "running as root and there is no postgres user to run the server as"
        return 1
    fi
    # /tmp, not $TMPDIR: as root the postgres user must be able to reach it,
    # and a TMPDIR under a 0700 home would stop it.
    dir=$(mktemp -d /tmp/postdesk-pg.XXXXXX) || return 1
    POSTDESK_PG_DIR=$dir
    export POSTDESK_PG_DIR
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir" || return 1
    fi
    if ! pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
        --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
        pg_log "initdb failed:"
        cat "$dir/initdb.log" >&2
        return 1
    fi
    for try in 1 2 3; do
        port=$(pg_free_port) || return 1
        # The last setting of a key wins: appended after initdb's own.
        pg_as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF
# postdesk tests (scripts/pg.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
fsync = off
full_page_writes = off
logging_collector = off
EOF
        if pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
            >"$dir/pg_ctl.log" 2>&1; then
            POSTDESK_TEST_PG="postgres://postgres@127.0.0.1:$port/"
            POSTDESK_TEST_PG_BIN=$bin
            export POSTDESK_TEST_PG POSTDESK_TEST_PG_BIN
            pg_log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $POSTDESK_TEST_PG (cluster $dir)"
            return 0
        fi
        # Most likely the port was taken between choosing and binding it.
        pg_log "start on port $port failed (try $try):"
        tail -n 5 "$dir/server.log" >&2 2>/dev/null || true
    done
    return 1
}

# Stops the cluster pg_start started (or the one in $1) and removes its
# directory. Harmless when none runs.
pg_stop() {
    local dir=${1:-${POSTDESK_PG_DIR:-}} bin
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    case $dir in
        /tmp/postdesk-pg.*) ;;
        *)
            pg_log "not a pg.sh cluster, left alone: $dir"
            return 1
            ;;
    esac
    bin=$(pg_bindir) || bin=
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    if [ "${POSTDESK_PG_DIR:-}" = "$dir" ]; then
        unset POSTDESK_PG_DIR POSTDESK_TEST_PG
    fi
}

pg_main() {
    set -euo pipefail
    case ${1:-} in
        run)
            shift
            [ $# -gt 0 ] || { pg_log "usage: scripts/pg.sh run CMD..."; exit 2; }
            trap 'pg_stop' EXIT
            trap 'exit 130' INT
            trap 'exit 143' TERM
            pg_start
            local rc=0
            "$@" || rc=$?
            exit "$rc"
            ;;
        start)
            pg_start
            printf 'export POSTDESK_TEST_PG=%q POSTDESK_TEST_PG_BIN=%q POSTDESK_PG_DIR=%q\n' \
                "$POSTDESK_TEST_PG" "$POSTDESK_TEST_PG_BIN" "$POSTDESK_PG_DIR"
            ;;
        stop)
            pg_stop "${2:-${POSTDESK_PG_DIR:-}}"
            ;;
        *)
            sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

# Executed (not sourced): a command.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    pg_main "$@"
fi
