#!/usr/bin/env bash
# Builds the Debian package: release binary, man pages, the packaged config,
# then `cargo deb`. Prints the path of the .deb on the last line.
#
#   scripts/package.sh                  everything (needs cargo-deb)
#   scripts/package.sh prod-config OUT  only write the packaged config to OUT
#
# The packaged /etc/postdesk/postdesk.yaml is config/postdesk.yaml with each
# "# prod: KEY: VALUE" comment taking the place of the KEY line above it
# (Unix socket, /var/lib/postdesk): the values the systemd unit expects.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'package.sh: %s\n' "$*" >&2; exit 1; }

prod_config() {
    local out=$1
    mkdir -p "$(dirname "$out")"
    {
        echo '# Installed by the postdesk package: config/postdesk.yaml with its "prod:"'
        echo '# values in effect (LMTP on /run/postdesk/lmtp.sock, data in /var/lib/postdesk).'
        echo '# Set support.address and team, check with'
        echo '#   postdesk --config /etc/postdesk/postdesk.yaml check-config'
        echo '# then: systemctl enable --now postdesk.'
        echo '#'
        awk '
            # A "# prod: KEY: VALUE" line replaces the held line when that one
            # sets KEY at the same indentation; the old value stays as a comment.
            {
                if (match($0, /^[ ]*# prod: /)) {
                    indent = substr($0, 1, index($0, "#") - 1)
                    value = substr($0, RLENGTH + 1)
                    key = value; sub(/:.*/, "", key)
                    if (have && index(held, indent key ":") == 1) {
                        old = substr(held, length(indent) + 1)
                        print indent value
                        print indent "# not packaged: " old
                        have = 0; replaced++
                        next
                    }
                }
                if (have) print held
                held = $0; have = 1
            }
            END {
                if (have) print held
                if (replaced == 0) { print "no prod: lines applied" > "/dev/stderr"; exit 1 }
            }
        ' config/postdesk.yaml
    } >"$out.tmp"
    mv "$out.tmp" "$out"
}

if [ "${1:-}" = prod-config ]; then
    [ $# -eq 2 ] || fail "usage: $0 prod-config OUT"
    prod_config "$2"
    exit 0
fi
[ $# -eq 0 ] || fail "usage: $0 [prod-config OUT]"

command -v cargo-deb >/dev/null 2>&1 || fail "cargo-deb is missing: cargo install cargo-deb --locked"

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

step "cargo build --release"
cargo build --release --locked >&2

step "man pages into target/man"
rm -rf target/man
if ! "$target/release/postdesk" man target/man >&2 2>/dev/null; then
    # Until the hidden `postdesk man DIR` subcommand is wired, the package
    # test writes the same pages (src/cli/man.rs) into POSTDESK_MAN_OUT.
    POSTDESK_MAN_OUT="$PWD/target/man" cargo test --release --locked --test package man_pages >&2
fi
ls target/man/*.1 >/dev/null 2>&1 || fail "no man pages in target/man"

step "packaged config target/package/postdesk.yaml"
prod_config target/package/postdesk.yaml

step "cargo deb"
deb=$(cargo deb --no-build --locked | grep '\.deb$' | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not name a package file: $deb"
echo "$deb"
