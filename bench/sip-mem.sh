#!/usr/bin/env bash
# Control plane memory per held call: N calls without SDP (no data plane
# session) held through Kordon; Kordon's RSS before and with them all up.
#
#   bench/sip-mem.sh [CALLS] [RATE]      (defaults 10000 calls at 500/s)
#
# Kordon listens on 127.0.0.1:5460, the caller is sipp on 127.0.0.2, the
# callee sipp on 127.0.0.3:5482 (the trunk "pstn").
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${1:-10000}
RATE=${2:-500}
BIN=${KORDON_BIN:-target/release/kordon}
WORK=$(mktemp -d /tmp/kordon-sipmem.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; sleep 0.5' EXIT
ulimit -n 20000 || true
cat > "$WORK/kordon.toml" <<TOML
[general]
data_dir = "$WORK/data"
log = "warn"
[metrics]
listen = ""
[ng]
listen = ""
[dataplane]
grpc_listen = "127.0.0.1:50461"
workers = 1
pin_workers = false
[sip]
[[sip.interfaces]]
name = "default"
listen = "127.0.0.1:5460"
tls_port = 0
[sip.timers]
no_answer_s = 60
session_expires_s = 0
[[sip.trunks]]
name = "pstn"
address = "127.0.0.3:5482"
acl = ["127.0.0.3"]
[[sip.trunks]]
name = "pbx"
address = "127.0.0.2:5491"
acl = ["127.0.0.2"]
[[sip.routes]]
prefix = ""
trunks = ["pstn"]
TOML
"$BIN" --config "$WORK/kordon.toml" run 2>"$WORK/kordon.log" &
KPID=$!
sleep 2
rss() { awk '/VmRSS/ {print $2}' "/proc/$KPID/status"; }
sipp -sf bench/sip/uas_nosdp.xml -i 127.0.0.3 -p 5482 -nostdin -max_socket 30000 \
  >"$WORK/uas.out" 2>&1 &
sleep 1
# Warm-up: a few calls so lazily built state exists before the baseline.
sipp -sf bench/sip/uac_hold.xml -i 127.0.0.2 -p 5491 -s 74951234567 127.0.0.1:5460 \
  -m 20 -r 20 -d 100 -nostdin >"$WORK/warm.out" 2>&1 || true
sleep 1
BASE=$(rss)
HOLD_MS=$(( (CALLS / RATE + 40) * 1000 ))
sipp -sf bench/sip/uac_hold.xml -i 127.0.0.2 -p 5491 -s 74951234567 127.0.0.1:5460 \
  -m "$CALLS" -r "$RATE" -l "$CALLS" -d "$HOLD_MS" -nostdin -max_socket 30000 \
  -trace_stat -stf "$WORK/uac_stat.csv" -fd 1 >"$WORK/uac.out" 2>&1 &
UAC=$!
# All calls up, and 35 s more so transactions of the set-up (Timer L/M, 32 s)
# have ended and only the calls themselves remain.
sleep $(( CALLS / RATE + 35 ))
HELD=$(rss)
CUR=$(tail -1 "$WORK/uac_stat.csv" | awk -F';' '{print $13}')
echo "baseline RSS ${BASE} KiB; with calls RSS ${HELD} KiB; sipp current calls ${CUR}"
awk -v b="$BASE" -v h="$HELD" -v n="$CALLS" 'BEGIN { printf "per call: %.2f KiB (%d calls)\n", (h-b)/n, n }'
kill "$UAC" 2>/dev/null || true
