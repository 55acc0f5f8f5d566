#!/usr/bin/env bash
# The one command that checks postdesk: installs what the tests need when it
# is missing (Postfix, Dovecot's LMTP server for the benchmark smoke test,
# swaks, python3 — Debian packages), then runs rustfmt,
# clippy and the whole test suite. CI runs this through .ci/run.
#
#   scripts/test.sh              everything
#   scripts/test.sh FILTER...    everything, with FILTER passed to `cargo test`
#
# Root installs missing packages itself; anyone else is told the command.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# Postfix's binaries live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# ---- 1. system packages -----------------------------------------------------
step "1/4 system packages (postfix, dovecot-lmtpd, swaks, python3, strace)"
missing=()
command -v postconf >/dev/null 2>&1 && command -v postfix >/dev/null 2>&1 || missing+=(postfix)
[ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v strace >/dev/null 2>&1 || missing+=(strace)

if [ ${#missing[@]} -eq 0 ]; then
    echo "all present: $(postconf -d -h mail_version 2>/dev/null | sed 's/^/postfix /'), $(/usr/sbin/dovecot --version 2>/dev/null | sed 's/^/dovecot /'), swaks, $(python3 --version 2>&1)"
elif [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<EOF
test.sh: missing: ${missing[*]}
Install them as root, then run this script again:

  sudo apt-get update
  echo 'postfix postfix/main_mailer_type select No configuration' | sudo debconf-set-selections
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
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}" </dev/null
    for c in postconf swaks python3 strace; do
        command -v "$c" >/dev/null 2>&1 || fail "$c still missing after apt-get install"
    done
    [ -x /usr/lib/dovecot/lmtp ] || fail "dovecot-lmtpd still missing after apt-get install"
    # The benchmark runs its own throwaway Dovecot on a free loopback port;
    # a system Dovecot the package may have started is not in its way.
    echo "installed: ${missing[*]}"
fi

# ---- 2. formatting ----------------------------------------------------------
step "2/4 cargo fmt --all -- --check"
cargo fmt --all -- --check

# ---- 3. lints ---------------------------------------------------------------
step "3/4 cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# ---- 4. the suite -----------------------------------------------------------
step "4/4 cargo test --all-targets"
cargo test --all-targets "$@"

printf '\n==> all checks passed\n'
