#!/usr/bin/env bash
# Measures the call verification node (bench/RESULTS.md, "Call verification"):
#
#   local      REST on the local path with wrk: CheckCall answered from the
#              capacity (local calls), CheckCall answered from the registry
#              (own A from another operator), RegisterCall, callUpdate.
#   radius     RADIUS Access-Requests with kordon-radius-load (answered
#              locally: outgoing calls, registered).
#   internode  CheckCall for incoming calls, each verified by asking a second
#              node (O) over the inter-node protocol; with w_size 1 and 64.
#   invite     the latency verification adds to a SIP INVITE from an
#              interconnect: SIPp calls through the node's B2BUA, the time
#              each verification took is read from its records.
#   all        everything above (default).
#
# The node under test (T) runs alone on CPU 1 (taskset; its control runtime
# then has one thread); load generators, and the peer node O, on CPU 0.
# Usage: bench/verify.sh [--duration S] [--connections N] [what...]
# Writes bench/out/verify-<stamp>.md (a markdown table) and the logs beside it.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out
DURATION=10
CONNS=64
WHAT=()
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift ;;
        --connections) CONNS=$2; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        local|radius|internode|invite|all) WHAT+=("$1") ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ ${#WHAT[@]} -gt 0 ] || WHAT=(all)
has() { for w in "${WHAT[@]}"; do [ "$w" = "$1" ] || [ "$w" = all ] && return 0; done; return 1; }

log() { printf '[verify %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in wrk taskset python3 sipp curl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk util-linux python3 sip-tester curl)" >&2; exit 2; }
done
cargo build --release -q -p kordon -p kordon-bench
KORDON=$ROOT/target/release/kordon
RLOAD=$ROOT/target/release/kordon-radius-load

STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$OUT/verify-$STAMP
mkdir -p "$WORK"
REPORT=$OUT/verify-$STAMP.md
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# Ports: T (node under test) and O (its peer).
T_REST=18085 T_RADIUS=18120 T_NODE=18081 T_SIP=15160 T_GRPC=15051
O_REST=28085 O_RADIUS=28120 O_NODE=28081 O_SIP=25160 O_GRPC=25051
UAS=127.0.0.3:15190

# config NAME WSIZE: writes $WORK/NAME.toml (T: node 2 / operator 22,
# capacity 7812xxxxxxx; O: node 1 / operator 11, capacity 7495xxxxxxx).
config() {
    local name=$1 wsize=$2 dir=$WORK/$1
    mkdir -p "$dir/setup"
    local uvr op rest radius node sip grpc code peer peer_node ranges
    if [ "$name" = o ]; then
        uvr=1 op=11 rest=$O_REST radius=$O_RADIUS node=$O_NODE sip=$O_SIP grpc=$O_GRPC code=495
        peer=2 peer_node=$T_NODE ranges='{ from = "78120000000", to = "78129999999", uvr = 2 }'
    else
        uvr=2 op=22 rest=$T_REST radius=$T_RADIUS node=$T_NODE sip=$T_SIP grpc=$T_GRPC code=812
        peer=1 peer_node=$O_NODE ranges='{ from = "74950000000", to = "74959999999", uvr = 1 }'
    fi
    printf 'CODE;RANGE_START;RANGE_END;UVR_TYPE\n%s;0000000;9999999;1\n' "$code" \
        > "$dir/setup/SETUP_${uvr}_2026_01_01_00_00_00"
    touch -d '1 minute ago' "$dir/setup/SETUP_${uvr}_2026_01_01_00_00_00"
    cat > "$WORK/$name.toml" <<EOF
[general]
data_dir = "$dir/data"
log = "warn"
[metrics]
listen = ""
[ng]
listen = ""
[dataplane]
grpc_listen = "127.0.0.1:$grpc"
workers = 1
pin_workers = false
[cdr]
enabled = false
[sip]
[[sip.interfaces]]
name = "default"
listen = "127.0.0.1:$sip"
tcp = false
tls_port = 0
[sip.timers]
session_expires_s = 0
[[sip.trunks]]
name = "interconnect"
address = "127.0.0.2:5060"
acl = ["127.0.0.2"]
operator_id = 11
[[sip.trunks]]
name = "pstn"
address = "$UAS"
[[sip.routes]]
prefix = ""
trunks = ["pstn"]
[verify]
nodes = [{ uvr_id = $uvr, operator_id = $op }]
rest_port = $rest
radius_port = $radius
local_port = $node
radius_secret = "bench-secret"
hash_key = "bench-network-key"
w_size = $wsize
req_timer = 1500
setup_path = "$dir/setup"
ranges = [$ranges]
[verify.peers]
$peer = "127.0.0.1:$peer_node"
EOF
}

# start NAME CPU: starts kordon run on CPU and waits for its REST port.
start() {
    local name=$1 cpu=$2 port
    rm -rf "$WORK/$name/data"
    taskset -c "$cpu" "$KORDON" --config "$WORK/$name.toml" run >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    if [ "$name" = o ]; then port=$O_REST; else port=$T_REST; fi
    for _ in $(seq 100); do
        curl -s -o /dev/null -X POST "http://127.0.0.1:$port/callUpdate" -d '{"call_id":"x"}' && break
        sleep 0.1
    done
    # The SETUP file is applied by the first scan.
    for _ in $(seq 50); do [ -z "$(ls "$WORK/$name/setup")" ] && break; sleep 0.1; done
}
stop_all() { cleanup; PIDS=(); sleep 0.5; }

# cpu_busy S: "a/b" = busy % of CPU 0 and CPU 1 over S seconds (/proc/stat).
cpu_busy() {
    local a b
    a=$(awk '/^cpu[01] /{idle=$5+$6; t=0; for(i=2;i<=NF;i++) t+=$i; print idle, t}' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu[01] /{idle=$5+$6; t=0; for(i=2;i<=NF;i++) t+=$i; print idle, t}' /proc/stat)
    paste <(echo "$a") <(echo "$b") | awk '{printf "%s%.0f", (NR>1?"/":""), 100*(1-($3-$1)/($4-$2))}'
}

# wrk_run LABEL SCRIPT URL [ENV...]: one wrk run on CPU 0; prints a table row.
wrk_run() {
    local label=$1 script=$2 url=$3; shift 3
    local out=$WORK/wrk-${label// /_}.txt
    out=${out//[()]/}
    # CPU busy of both CPUs over the middle of the run.
    (sleep 1; cpu_busy $((DURATION > 3 ? DURATION - 2 : 1)) >"$out.cpu") &
    local probe=$!
    env "$@" taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$script" "$url" >"$out" 2>&1
    wait "$probe"
    python3 - "$label" "$out" <<'PY'
import re, sys
label, path = sys.argv[1], sys.argv[2]
try:
    cpu = open(path + ".cpu").read().strip()
except OSError:
    cpu = "?"
t = open(path).read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", t)
lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", t, re.M))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
total = re.search(r"(\d+) requests in", t)
print(f"| {label} | {float(rps.group(1)) if rps else 0:,.0f} | {lat.get('50','?')} | {lat.get('99','?')} | {total.group(1) if total else '?'} | {errs.group(1) if errs else 0} | {cpu} |")
PY
}

{
echo "# Call verification, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
echo
echo "node under test on CPU 1, load (and the peer node) on CPU 0; wrk -t1 -c$CONNS -d${DURATION}s"
echo
echo "| what | req/s | p50 | p99 | requests | non-2xx | CPU0/CPU1 busy % |"
echo "|---|---|---|---|---|---|---|"
} >"$REPORT"

if has local; then
    log "local path"
    config t 64
    start t 1
    U=http://127.0.0.1:$T_REST
    wrk_run "CheckCall local (capacity)" bench/verify/check.lua "$U" MODE=local FROM=78120000000 B_FROM=78121000000 OWN_OP=22 >>"$REPORT"
    wrk_run "RegisterCall" bench/verify/register.lua "$U" FROM=78120000000 B_FROM=78121000000 ID_DST=11 >>"$REPORT"
    wrk_run "CheckCall own A (registry)" bench/verify/check.lua "$U" MODE=own_a FROM=78120000000 B_FROM=78121000000 PEER_OP=33 >>"$REPORT"
    # callUpdate refreshes calls that exist: register upd-0..upd-999 first.
    python3 - "$U" <<'PY'
import json, sys, urllib.request
for i in range(1000):
    body = json.dumps({"a": "78120000001", "b": "74950000001", "id_dst": 11, "call_id": f"upd-{i}"}).encode()
    req = urllib.request.Request(sys.argv[1] + "/RegisterCall", data=body, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
    wrk_run "callUpdate" bench/verify/update.lua "$U" >>"$REPORT"
    stop_all
fi

if has internode; then
    for w in 1 64; do
        log "inter-node path, w_size $w"
        config o 64
        config t "$w"
        start o 0
        start t 1
        wrk_run "CheckCall incoming, asks O, w_size $w" bench/verify/check.lua "http://127.0.0.1:$T_REST" \
            MODE=own_a FROM=74950000000 B_FROM=78121000000 PEER_OP=11 >>"$REPORT"
        stop_all
    done
fi

if has radius; then
    log "RADIUS"
    config t 64
    start t 1
    for window in 32 256; do
        (sleep 1; cpu_busy $((DURATION > 3 ? DURATION - 2 : 1)) >"$WORK/radius-$window.cpu") &
        probe=$!
        taskset -c 0 "$RLOAD" --target "127.0.0.1:$T_RADIUS" --secret bench-secret --duration "$DURATION" \
            --window "$window" --a 7812XXXXXXX --b 7495XXXXXXX --in-label 22 >"$WORK/radius-$window.txt" 2>&1 || true
        wait "$probe"
        python3 - "$WORK/radius-$window.txt" "$WORK/radius-$window.cpu" "$window" <<'PY' >>"$REPORT"
import json, sys
cpu = open(sys.argv[2]).read().strip()
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        j = json.loads(line)
        lat = j["latency_us"]
        print(f"| RADIUS Access-Request (outgoing, registered), window {sys.argv[3]} | {j['throughput_per_s']:,.0f} | {lat['p50']:.0f}us | {lat['p99']:.0f}us | {j['answered']} | {j['timeouts']} timeouts, {j['rejects']} rejects | {cpu} |")
PY
    done
    stop_all
fi

if has invite; then
    log "INVITE verification latency"
    config o 64
    config t 64
    start o 0
    start t 1
    # Callers on O's numbers that O never placed: T asks O, O answers
    # Release, T answers 403 (one inter-node round trip per INVITE, as for a
    # genuine call, without a callee to wait for).
    taskset -c 0 sipp 127.0.0.1:$T_SIP -sf tests/sip/scenarios/uac_expect.xml -i 127.0.0.2 -p 5060 \
        -key caller 74957000001 -key callee 78121234567 -key domain 127.0.0.1:$T_SIP -key expect 403 \
        -r 100 -m $((100 * DURATION)) -nostdin -trace_stat -stf "$WORK/sipp-uac.csv" \
        >"$WORK/sipp-uac.log" 2>&1 || log "SIPp reported failed calls (see $WORK/sipp-uac.log)"
    sleep 1
    python3 - "$WORK/t/data/verify.sqlite" <<'PY' >>"$REPORT"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
v = sorted(r[0] for r in db.execute("select latency_us from verifications where source='sip'"))
codes = dict(db.execute("select code, count(*) from verifications where source='sip' group by code"))
if v:
    p = lambda q: v[min(len(v) - 1, int(q * len(v)))]
    print(f"| INVITE from an interconnect: verification time (SIPp 100 calls/s, T asks O) | — | {p(0.5)/1000:.2f}ms | {p(0.99)/1000:.2f}ms | {len(v)} | codes {codes} | |")
else:
    print("| INVITE from an interconnect | no verification recorded | | | | |")
PY
    stop_all
fi

log "wrote $REPORT"
cat "$REPORT"
