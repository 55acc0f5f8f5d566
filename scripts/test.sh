#!/usr/bin/env bash
# The one command that checks postdesk: installs what the tests need when it
# is missing (Postfix, Dovecot's LMTP server for the benchmark smoke test,
# swaks, python3, strace, PostgreSQL — Debian packages), then runs rustfmt,
# clippy and the whole test suite on the sled store, then the integration
# tests again on PostgreSQL (a throwaway cluster, scripts/pg.sh). CI runs
# this through .ci/run.
#
#   scripts/test.sh              everything
#   scripts/test.sh FILTER...    everything, with FILTER passed to `cargo test`
#
#   POSTDESK_TEST_BACKENDS="sled postgres"   the default: both passes;
#                                            "sled" or "postgres" for one
#
# Root installs missing packages itself; anyone else is told the command.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
took() { printf '==> %s took %dm%02ds\n' "$1" $(($2 / 60)) $(($2 % 60)); }
fail() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# Postfix's binaries live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

backends=${POSTDESK_TEST_BACKENDS:-sled postgres}
for b in $backends; do
    case $b in
        sled | postgres) ;;
        *) fail "POSTDESK_TEST_BACKENDS: unknown backend $b (sled, postgres)" ;;
    esac
done
want() { case " $backends " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Debian's postgresql package creates and starts a cluster of its own; the
# tests never use it (scripts/pg.sh starts a private one), so none is made.
no_main_cluster() {
    mkdir -p /etc/postgresql-common/createcluster.d
    printf '%s\n' '# scripts/test.sh: the tests run their own throwaway clusters' \
        'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/postdesk-tests.conf
}

# ---- 1. system packages -----------------------------------------------------
step "1/6 system packages (postfix, dovecot-lmtpd, swaks, python3, strace, postgresql)"
missing=()
command -v postconf >/dev/null 2>&1 && command -v postfix >/dev/null 2>&1 || missing+=(postfix)
[ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v strace >/dev/null 2>&1 || missing+=(strace)
if want postgres; then
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "all present: $(postconf -d -h mail_version 2>/dev/null | sed 's/^/postfix /'), $(/usr/sbin/dovecot --version 2>/dev/null | sed 's/^/dovecot /'), swaks, $(python3 --version 2>&1)$(want postgres && printf '%s\n' /usr/lib/postgresql/*/ | sort -V | tail -n 1 | sed 's|.*/\([0-9.]*\)/$|, postgresql \1|')"
elif [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<EOF
test.sh: missing: ${missing[*]}
Install them as root, then run this script again:

  sudo apt-get update
  echo 'postfix postfix/main_mailer_type select No configuration' | sudo debconf-set-selections
  sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' | sudo tee /etc/postgresql-common/createcluster.d/postdesk-tests.conf
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}

(or run this script as root; it installs them itself)
EOF
    exit 1
else
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Postfix must not ask anything: no mailer configuration (the tests run
    # their own private instance), and a fixed mail name.
    printf '%s\n' \
        'postfix postfix/main_mailer_type select No configuration' \
        'postfix postfix/mailname string localhost' | debconf-set-selections
    no_main_cluster
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
    for c in postconf swaks python3 strace; do
        command -v "$c" >/dev/null 2>&1 || fail "$c still missing after apt-get install"
    done
    [ -x /usr/lib/dovecot/lmtp ] || fail "dovecot-lmtpd still missing after apt-get install"
    if want postgres; then
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
            fail "postgresql still missing after apt-get install"
    fi
    # The benchmark runs its own throwaway Dovecot on a free loopback port;
    # a system Dovecot the package may have started is not in its way.
    echo "installed: ${missing[*]}"
fi

# ---- 2. formatting ----------------------------------------------------------
step "2/6 cargo fmt --all -- --check"
cargo fmt --all -- --check

# ---- 3. lints ---------------------------------------------------------------
step "3/6 cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# ---- 4. the suite on sled -----------------------------------------------------
if want sled; then
    step "4/6 cargo test --all-targets (store: sled)"
    t0=$SECONDS
    # A POSTDESK_TEST_PG left in the environment would make this a second
    # PostgreSQL pass.
    env -u POSTDESK_TEST_PG cargo test --all-targets "$@"
    took "the sled pass" $((SECONDS - t0))
else
    step "4/6 the sled pass: skipped (POSTDESK_TEST_BACKENDS=$backends)"
fi

# ---- 5. + 6. the integration tests again on PostgreSQL ----------------------
if want postgres; then
    step "5/6 a throwaway PostgreSQL cluster (scripts/pg.sh)"
    # shellcheck source=scripts/pg.sh
    source scripts/pg.sh
    # Stopped and removed however this script ends.
    trap 'pg_stop' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    pg_start || fail "could not start a PostgreSQL cluster (see above)"

    # Every daemon and CLI call of the integration tests gets a database of
    # its own there (tests/common); the unit tests do not touch a store
    # backend, so they are not run twice, except the PostgreSQL store's own.
    step "6/6 cargo test --test '*' and --lib store::pg (store: postgres, $POSTDESK_TEST_PG)"
    t0=$SECONDS
    cargo test --test '*' "$@"
    cargo test --lib store::pg
    took "the PostgreSQL pass" $((SECONDS - t0))
    pg_stop
else
    step "5/6 + 6/6 the PostgreSQL pass: skipped (POSTDESK_TEST_BACKENDS=$backends)"
fi

printf '\n==> all checks passed\n'
