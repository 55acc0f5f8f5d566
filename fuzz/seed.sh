#!/bin/sh
# Builds the fuzz corpora from the repository's fixtures; nothing it writes
# is committed (fuzz/corpus/ is in fuzz/.gitignore).
#
#   fuzz/corpus/ingest/        every fixtures/mail/**/*.eml, plus
#                              fuzz/regressions/ingest/*
#   fuzz/corpus/lmtp_session/  fuzz/seeds/lmtp_session/* (hand-written
#                              transcripts), plus the smallest fixture mails
#                              wrapped in an LMTP transaction (CRLF,
#                              dot-stuffed)
#
# Usage: fuzz/seed.sh   (from anywhere; idempotent)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
ingest="$here/corpus/ingest"
lmtp="$here/corpus/lmtp_session"
mkdir -p "$ingest" "$lmtp"

find "$root/fixtures/mail" -type f -name '*.eml' | sort | while read -r f; do
    # Flattened name: the fixture's path under fixtures/mail.
    rel=${f#"$root/fixtures/mail/"}
    cp "$f" "$ingest/$(printf '%s' "$rel" | tr '/' '_')"
done
# Inputs that once broke something (see docs/fuzzing.md).
cp "$here"/regressions/ingest/* "$ingest/"
n=$(ls "$ingest" | wc -l)

cp "$here"/seeds/lmtp_session/* "$lmtp/"
# The 20 smallest fixtures as LMTP transactions.
find "$root/fixtures/mail" -type f -name '*.eml' -size -8k -printf '%s %p\n' \
    | sort -n | head -n 20 | while read -r _ f; do
    out="$lmtp/tx-$(basename "$f" .eml).lmtp"
    {
        printf 'LHLO postfix.test\r\nMAIL FROM:<sender@cust.test>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n'
        # CRLF line ends, then dot-stuffing.
        sed -e 's/\r$//' -e 's/$/\r/' -e 's/^\./../' "$f"
        printf '.\r\nQUIT\r\n'
    } > "$out"
done
echo "seeded $n ingest inputs and $(ls "$lmtp" | wc -l) LMTP transcripts under $here/corpus"
