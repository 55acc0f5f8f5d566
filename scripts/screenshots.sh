#!/usr/bin/env bash
# Screenshots of the HTML report and digest for the docs
# (docs/img/report.png, docs/img/digest.png), made the way a lead gets them:
#
#   1. a sample desk: two weeks of history (generated mbox, dates relative
#      to today, with the agents' #take/#done mails) imported with
#      `postdesk import mbox`, then the real daemon and a few live mails;
#   2. a report asked for by mail (support+report-all@) and the digest
#      (policy.digest_at two seconds after a restart), both sent to a small
#      recording SMTP server;
#   3. the text/html part of each sent mail rendered by headless Chromium.
#
#   scripts/screenshots.sh [OUTDIR]     OUTDIR defaults to docs/img
#
# Needs python3, chromium and faketime (Debian: apt-get install -y chromium
# faketime; root installs them itself). CARGO_TARGET_DIR is honoured; KEEP=1 keeps the
# sample desk, the sent mail and the HTML in the temporary folder. CI does not run this:
# the PNGs are a docs artifact, committed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OUT=${1:-docs/img}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

fail() { printf 'screenshots.sh: %s\n' "$*" >&2; exit 1; }
step() { printf '==> %s\n' "$*"; }

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y chromium >/dev/null
        CHROMIUM=$(command -v chromium)
    else
        fail "chromium is missing: sudo apt-get install -y chromium"
    fi
fi
command -v python3 >/dev/null || fail "python3 is missing"
if ! command -v faketime >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y faketime >/dev/null
    else
        fail "faketime is missing: sudo apt-get install -y faketime"
    fi
fi

step "building postdesk"
TMP=$(mktemp -d)
cargo build --quiet
# A copy: a shared target dir may get another build's binary meanwhile.
cp "${CARGO_TARGET_DIR:-$ROOT/target}/debug/postdesk" "$TMP/postdesk"
BIN=$TMP/postdesk
grep -q 'data-day=' "$BIN" || fail "$BIN has no HTML report templates (built from another tree?)"

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LMTP_PORT=$(free_port)
SMTP_PORT=$(free_port)
mkdir -p "$TMP/sent" "$TMP/data"

step "recording SMTP server on $SMTP_PORT"
python3 - "$SMTP_PORT" "$TMP/sent" <<'PY' &
# Accepts every mail and writes its DATA to DIR/N.eml: just enough SMTP for
# lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
import socketserver, sys, os, itertools
port, outdir = int(sys.argv[1]), sys.argv[2]
counter = itertools.count(1)
class H(socketserver.StreamRequestHandler):
    def w(self, s): self.wfile.write(s.encode() + b"\r\n"); self.wfile.flush()
    def handle(self):
        self.w("220 sink ESMTP")
        while True:
            line = self.rfile.readline()
            if not line: return
            cmd = line.decode("latin-1").strip().upper()
            if cmd.startswith("EHLO"):
                self.wfile.write(b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"); self.wfile.flush()
            elif cmd.startswith("DATA"):
                self.w("354 go ahead")
                data = []
                while True:
                    l = self.rfile.readline()
                    if l in (b".\r\n", b".\n", b""): break
                    data.append(l[1:] if l.startswith(b"..") else l)
                path = os.path.join(outdir, "%04d.eml" % next(counter))
                with open(path + ".tmp", "wb") as f: f.write(b"".join(data))
                os.rename(path + ".tmp", path)
                self.w("250 ok")
            elif cmd.startswith("QUIT"):
                self.w("221 bye"); return
            else:
                self.w("250 ok")
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("127.0.0.1", port), H).serve_forever()
PY
PIDS+=($!)

cat >"$TMP/postdesk.yaml" <<EOF
listen:
  lmtp: ["127.0.0.1:$LMTP_PORT"]
data_dir: $TMP/data
support:
  address: support@example.com
  name: Example Support
team:
  domains: [example.com]
  agents:
    - email: alice@example.com
      name: Alice
    - email: bob@example.com
      name: Bob
    - email: carol@example.com
      name: Carol
  leads: [lead@example.com]
commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
outbound:
  relay: smtp://127.0.0.1:$SMTP_PORT
  retry_min: 200ms
EOF

step "two weeks of history: generated mbox imported, then taken and done at their times"
python3 - "$TMP/history.mbox" "$TMP/plan" <<'PY'
# Customer questions over the last 14 days (the mbox), and a plan of when an
# agent took each and when many were done, a few hours to days later
# (`postdesk ticket take/done` run under faketime at those times: import
# obeys no commands). Deterministic (seeded).
import random, sys, email.utils, datetime as dt
rnd = random.Random(7)
now = dt.datetime.now(dt.timezone.utc)
subjects = ["Printer prints blank pages", "Invoice address is wrong", "VPN drops every hour",
            "Cannot log in after password reset", "Scanner shows error E-42", "Order 1182 not delivered",
            "Refund for a double charge", "Export to CSV is empty", "Two-factor codes do not arrive",
            "Mailbox is full", "New laptop setup", "Licence renewal", "Wi-Fi in the meeting room",
            "Slow reports page", "Access to the shared drive"]
customers = ["mari@acme.test", "jaan@example.org", "peeter@example.net", "liis@shop.test", "tiit@firm.test"]
agents = ["alice", "bob", "carol"]
asked = []
for day in range(13, -1, -1):
    for _ in range(rnd.randint(2, 7)):
        at = now - dt.timedelta(days=day, hours=rnd.randint(0, 9), minutes=rnd.randint(0, 59))
        if at > now - dt.timedelta(minutes=30):
            at = now - dt.timedelta(minutes=30 + rnd.randint(0, 60))
        asked.append(at)
asked.sort()
plan = []
with open(sys.argv[1], "w") as f:
    for n, at in enumerate(asked, 1):
        who, subj = rnd.choice(customers), rnd.choice(subjects)
        f.write("From %s %s\n" % (who, at.strftime("%a %b %d %H:%M:%S %Y")))
        f.write("From: %s\nTo: support@example.com\nSubject: %s\nMessage-ID: <q%d@cust.test>\nDate: %s\n\nHello, %s. Can you help?\n\n"
                % (who, subj, n, email.utils.format_datetime(at), subj.lower()))
        if rnd.random() < 0.8:
            took = at + dt.timedelta(minutes=rnd.randint(5, 120))
            if took < now:
                plan.append((took, "take", n, rnd.choice(agents)))
                done = took + dt.timedelta(hours=rnd.randint(1, 60))
                if done < now and rnd.random() < 0.75:
                    plan.append((done, "done", n, ""))
plan.sort()
with open(sys.argv[2], "w") as f:
    for at, what, n, agent in plan:
        f.write("%s %s SUP-%d %s\n" % (at.strftime("%Y-%m-%d %H:%M:%S"), what, n, agent))
PY
"$BIN" --config "$TMP/postdesk.yaml" import mbox "$TMP/history.mbox" >/dev/null
# faketime reads UTC times here; the daemon is not running, so the command
# line works on the store itself.
while read -r day time what tok agent; do
    if [ "$what" = take ]; then
        TZ=UTC faketime "$day $time" "$BIN" --config "$TMP/postdesk.yaml" ticket take "$tok" --as "$agent" >/dev/null
    else
        TZ=UTC faketime "$day $time" "$BIN" --config "$TMP/postdesk.yaml" ticket done "$tok" >/dev/null
    fi
done <"$TMP/plan"

start() {
    RUST_LOG=info "$BIN" --config "$TMP/postdesk.yaml" serve 2>>"$TMP/postdesk.log" &
    DAEMON=$!
    PIDS+=($DAEMON)
    for _ in $(seq 100); do
        grep -q "postdesk ready" "$TMP/postdesk.log" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$TMP/postdesk.log" >&2
    fail "the daemon did not start"
}
stop() { kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; }

lmtp() { # FROM RCPT FILE
    python3 - "$LMTP_PORT" "$1" "$2" "$3" <<'PY'
import smtplib, sys
port, frm, rcpt, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with smtplib.LMTP("127.0.0.1", port) as s:
    s.sendmail(frm, [rcpt], open(path, "rb").read())
PY
}

wait_kind() { # KIND -> path of the first sent mail of that kind
    for _ in $(seq 200); do
        f=$(grep -l "^X-Postdesk-Kind: $1" "$TMP"/sent/*.eml 2>/dev/null | head -1 || true)
        [ -n "$f" ] && { echo "$f"; return 0; }
        sleep 0.1
    done
    fail "no $1 mail was sent"
}

step "the daemon, and today's live mail"
start
CLI=("$BIN" --config "$TMP/postdesk.yaml")
now_date=$(date -R)
i=0
for subj in 'Printer jams on every page' 'Quote request: 40 licences' '<b>URGENT</b> server down & "nothing" works'; do
    i=$((i + 1))
    printf 'From: Mari <mari@acme.test>\r\nTo: support@example.com\r\nSubject: %s\r\nMessage-ID: <live%d@acme.test>\r\nDate: %s\r\n\r\nPlease help.\r\n' \
        "$subj" "$i" "$now_date" >"$TMP/live$i.eml"
    lmtp mari@acme.test support@example.com "$TMP/live$i.eml"
done
# Some load of every kind: waiting and snoozed beside the active ones.
tickets_json() { "${CLI[@]}" ticket list --json; }
snooze=$(tickets_json | python3 -c 'import json,sys; a=[t["token"] for t in json.load(sys.stdin) if t["status"]=="active"]; print(a[0] if a else "")')
[ -n "$snooze" ] && "${CLI[@]}" ticket snooze "$snooze" 2d >/dev/null
tickets_json | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["status"] == "active" and t["assignee"] == "bob@example.com":
        print(t["token"]); break' | while read -r tok; do
    printf 'Authentication-Results: mx.example.com; dkim=pass header.d=example.com header.s=sel\r\nFrom: bob@example.com\r\nTo: support@example.com\r\nSubject: Re: [%s]\r\nMessage-ID: <wait1@example.com>\r\nDate: %s\r\n\r\n#waiting\r\n' "$tok" "$now_date" >"$TMP/wait.eml"
    lmtp bob@example.com support@example.com "$TMP/wait.eml"
done

step "a report asked for by mail"
printf 'From: alice@example.com\r\nTo: support+report-all@example.com\r\nSubject: report\r\nMessage-ID: <ask1@example.com>\r\nDate: %s\r\n\r\n\r\n' "$now_date" >"$TMP/ask.eml"
lmtp alice@example.com support+report-all@example.com "$TMP/ask.eml"
REPORT=$(wait_kind report)

step "the digest (policy.digest_at two seconds after a restart)"
stop
printf 'policy:\n  digest_at: "%s UTC"\n' "$(date -u -d '+3 seconds' +%H:%M:%S)" >>"$TMP/postdesk.yaml"
start
DIGEST=$(wait_kind digest)
stop

step "HTML parts out of the sent mail"
python3 - "$REPORT" "$TMP/report.html" "$DIGEST" "$TMP/digest.html" <<'PY'
import email, email.policy, sys
args = sys.argv[1:]
for src, dst in zip(args[::2], args[1::2]):
    msg = email.message_from_binary_file(open(src, "rb"), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative", msg.get_content_type()
    kinds = [p.get_content_type() for p in msg.iter_parts()]
    assert kinds == ["text/plain", "text/html"], kinds
    open(dst, "w", encoding="utf-8").write(msg.get_body(("html",)).get_content())
PY

shoot() { # HTML PNG HEIGHT
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --force-device-scale-factor=1 --window-size="760,$3" \
        --screenshot="$2" "file://$1" >/dev/null 2>&1
    [ -s "$2" ] || fail "chromium wrote no $2"
}
# Tall enough for the whole page: under 40 px per table row, plus the charts.
rows() { grep -c 'data-ticket=' "$1" || true; }
shoot "$TMP/report.html" "$OUT/report.png" $((1000 + 40 * $(rows "$TMP/report.html")))
shoot "$TMP/digest.html" "$OUT/digest.png" $((1000 + 40 * $(rows "$TMP/digest.html")))
step "wrote $OUT/report.png and $OUT/digest.png"
