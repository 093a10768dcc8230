#!/usr/bin/env bash
# Measures SIP calls per second through a proxy or a B2BUA on this machine:
# SIPp's built-in UAS (-sn uas) behind the system under test, SIPp's built-in
# UAC (-sn uac) in front of it, the system under test on CPU 1 and both SIPp
# processes on CPU 0.
#
# Usage (from the repository root):
#   bench/cps.sh [options] fixed RATE     one run at RATE calls/s
#   bench/cps.sh [options] max            the highest rate sustained
#
#   --target T         kamailio (bench/kamailio-proxy.cfg, default) or kordon
#   --duration S       calls are started for S seconds (default 30):
#                      -r RATE -m RATE*S
#   --hold MS          call length, ACK to BYE (default 0: SIPp's -d)
#   --max-failed PCT   a run passes below this share of failed calls (default 0.1)
#   --steps LIST       max: upward rates (default "100 200 400 800 1600 3200 6400 12800")
#   --refine N         max: bisection steps after the first failing rate (default 3)
#   --listen IP:PORT   where the system under test takes SIP (default
#                      127.0.0.1:5070 for kamailio, 127.0.0.1:5060 for kordon)
#   --uas IP:PORT      the UAS (default 127.0.0.3:5090)
#   --uac-ip IP        the UAC's address (default 127.0.0.2)
#   --called NUM       the Request-URI user the UAC calls (default 74951234567,
#                      a number Kordon's default route takes)
#   --shm MB           kamailio: shared memory (-m, default 1024; tm needs about
#                      20 KB per call for the 5 s it keeps a transaction)
#   --children N       kamailio: worker processes (-n, default 1: on one CPU more
#                      workers only reorder the UAS's back-to-back 180 and 200, and
#                      SIPp's built-in UAC fails a call on a 180 after the 200)
#   --kordon-bin PATH  kordon: the binary (default target/release/kordon)
#   --kordon-config F  kordon: its configuration; @LISTEN@ and @UAS@ in it are
#                      replaced by --listen and --uas (required for kordon)
#   --kordon-cmd CMD   kordon: the whole command instead (run by bash -c, must
#                      exec the server so that its CPU time is counted)
#   --nice N           nice value of everything started (default -10; 0 = as is)
#
# A run passes when fewer than --max-failed % of the calls failed (a call that
# did not end is failed) and the UAC started them all in time (its run lasted
# at most S + hold + max(2 s, 5 % of S)); otherwise the generator or the
# system under test could not keep the rate. The proxy (every process of it)
# is started afresh for each run, pinned to CPU 1 with taskset; its CPU time
# is utime + stime of all its processes from /proc/PID/stat, read when the UAC
# starts and when it ends.
#
# Columns besides the counts: retrans = SIPp's retransmissions; achieved cps
# = attempted / (run time - hold); SUT CPU = that CPU time, in total and per
# successful call; SIPp CPU % = UAC + UAS CPU time over the run, in % of one
# CPU (near 100: the generator was the limit); CPU0/CPU1 busy % = run time
# minus the CPU's idle and iowait time (/proc/stat), which also counts
# anything else that ran there; UDP drops = datagrams the receive buffers of
# the SUT's and the UAS's SIP sockets dropped (/proc/net/udp).
#
# Prints a markdown row per run (and a summary in max mode); writes
# bench/out/cps-<stamp>.md and every log next to it. Exit code: 0 when the
# fixed run passed or max found a rate, 1 when it failed, 2 when the system
# under test or SIPp could not be started.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out
PROXY_CPU=1
GEN_CPU=0
LIFETIME=3600            # everything we start dies by itself after this (s)
# SIPp's socket buffers (the kernel caps them at net.core.rmem_max/wmem_max):
# with the default 208 KiB the UAS drops bursts from 6,000 calls/s on.
SIPP_BUF=4194304

TARGET=kamailio
DURATION=30
HOLD=0
MAX_FAILED=0.1
STEPS="100 200 400 800 1600 3200 6400 12800"
REFINE=3
LISTEN=""
CALLED=74951234567
UAS=127.0.0.3:5090
UAC_IP=127.0.0.2
CHILDREN=1
SHM=1024
KORDON_BIN=$ROOT/target/release/kordon
KORDON_CONFIG=""
KORDON_CMD=""
NICE=-10
MODE=""
RATE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target) TARGET=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --hold) HOLD=$2; shift ;;
        --max-failed) MAX_FAILED=$2; shift ;;
        --steps) STEPS=$2; shift ;;
        --refine) REFINE=$2; shift ;;
        --listen) LISTEN=$2; shift ;;
        --uas) UAS=$2; shift ;;
        --uac-ip) UAC_IP=$2; shift ;;
        --called) CALLED=$2; shift ;;
        --children) CHILDREN=$2; shift ;;
        --shm) SHM=$2; shift ;;
        --kordon-bin) KORDON_BIN=$2; shift ;;
        --kordon-config) KORDON_CONFIG=$2; shift ;;
        --kordon-cmd) KORDON_CMD=$2; shift ;;
        --nice) NICE=$2; shift ;;
        fixed) MODE=fixed; RATE=${2:?fixed needs a rate}; shift ;;
        max) MODE=max ;;
        -h|--help) sed -n '2,53p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$MODE" ] || { echo "usage: bench/cps.sh [options] fixed RATE | max (--help)" >&2; exit 2; }
case "$TARGET" in
    kamailio) LISTEN=${LISTEN:-127.0.0.1:5070} ;;
    kordon) LISTEN=${LISTEN:-127.0.0.1:5060} ;;
    *) echo "unknown target $TARGET (kamailio or kordon)" >&2; exit 2 ;;
esac

log() { printf '[cps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (system under test on CPU $PROXY_CPU, SIPp on CPU $GEN_CPU)"
    exit 1
fi
command -v sipp > /dev/null || { log "sipp is not installed (Debian package sip-tester)"; exit 1; }
if [ "$TARGET" = kamailio ]; then
    command -v kamailio > /dev/null || { log "kamailio is not installed (Debian package kamailio)"; exit 1; }
fi

mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT=$OUT/cps-$STAMP.md
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kordon-cps.XXXXXX")
TCK=$(getconf CLK_TCK)
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# ------------------------------------------------------------- processes
# Each long-lived process runs under `timeout`, which puts itself and the
# process in a process group of their own: the group id is the wrapper's pid,
# and the group holds every process of the server (Kamailio forks workers).
SUT_GROUP=""
UAS_GROUP=""

stop_group() { # pgid
    local g=$1
    [ -n "$g" ] || return 0
    kill -TERM -- "-$g" 2> /dev/null || true
    for _ in $(seq 50); do
        kill -0 -- "-$g" 2> /dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$g" 2> /dev/null || true
    wait "$g" 2> /dev/null || true
}

cleanup() {
    stop_group "$SUT_GROUP"
    stop_group "$UAS_GROUP"
    SUT_GROUP=""
    UAS_GROUP=""
}
trap 'cleanup; rm -rf "$RUN_DIR"' EXIT
trap 'exit 130' INT TERM

# Whether something listens on UDP ip:port (IPv4), from /proc/net/udp.
udp_listening() { # ip:port
    local ip=${1%:*} port=${1##*:} a b c d hex
    IFS=. read -r a b c d <<< "$ip"
    hex=$(printf '%02X%02X%02X%02X:%04X' "$d" "$c" "$b" "$a" "$port")
    awk -v want="$hex" 'NR > 1 && $2 == want { found = 1 } END { exit !found }' /proc/net/udp
}

# Datagrams dropped by the receive buffer of the UDP socket on ip:port
# (/proc/net/udp, last column; the socket's lifetime total).
udp_drops() { # ip:port
    local ip=${1%:*} port=${1##*:} a b c d hex
    IFS=. read -r a b c d <<< "$ip"
    hex=$(printf '%02X%02X%02X%02X:%04X' "$d" "$c" "$b" "$a" "$port")
    awk -v want="$hex" 'NR > 1 && $2 == want { n += $NF } END { print n + 0 }' /proc/net/udp
}

wait_udp() { # ip:port pgid what
    for _ in $(seq 150); do
        udp_listening "$1" && return 0
        kill -0 -- "-$2" 2> /dev/null || { log "$3 exited before listening on $1"; return 1; }
        sleep 0.1
    done
    log "$3 does not listen on $1 after 15 s"
    return 1
}

# utime + stime (clock ticks) of every process of group $1.
group_ticks() {
    local total=0 p t
    for p in $(pgrep -g "$1" 2> /dev/null); do
        # Fields after the command name: state is the 1st, utime the 12th.
        t=$(sed 's/.*) //' "/proc/$p/stat" 2> /dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# User + system CPU seconds of the children this shell has waited for
# (bash's `times`, second line), e.g. the foreground UAC. `times` runs in
# this shell (a command substitution would ask a subshell, whose children
# are its own).
children_cpu() {
    times > "$RUN_DIR/times"
    tail -n 1 "$RUN_DIR/times" | awk '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
        print s
    }'
}

# Idle + iowait time of CPU $1 in clock ticks, from /proc/stat. On this
# tickless kernel these two are measured as the CPU sleeps; the user and
# system fields are tick samples (see bench/README.md): busy time is the
# window minus this.
cpu_idle() {
    awk -v cpu="cpu$1" '$1 == cpu { print $5 + $6 }' /proc/stat
}

# Refuses to start on an address something else listens on already: the
# readiness check would see that one, and the run would measure it.
ensure_free() { # ip:port what
    if udp_listening "$1"; then
        log "something already listens on UDP $1 (wanted for $2): stop it or choose another address"
        return 1
    fi
}

start_uas() {
    ensure_free "$UAS" "the SIPp UAS" || return 1
    timeout -s TERM "$LIFETIME" nice -n "$NICE" taskset -c "$GEN_CPU" \
        sipp -sn uas -i "${UAS%:*}" -p "${UAS##*:}" -nostdin -buff_size "$SIPP_BUF" \
        -trace_err -error_file "$OUT/cps-$STAMP-uas-$1-errors.log" \
        > "$OUT/cps-$STAMP-uas-$1.log" 2>&1 &
    UAS_GROUP=$!
    wait_udp "$UAS" "$UAS_GROUP" "the SIPp UAS"
}

start_sut() {
    local label=$1 logfile=$OUT/cps-$STAMP-$TARGET-$1.log
    ensure_free "$LISTEN" "$TARGET" || return 1
    case "$TARGET" in
        kamailio)
            timeout -s TERM "$LIFETIME" nice -n "$NICE" taskset -c "$PROXY_CPU" \
                kamailio -f "$ROOT/bench/kamailio-proxy.cfg" -DD -E \
                -l "udp:$LISTEN" -A "UAS=\"udp:$UAS\"" -n "$CHILDREN" -m "$SHM" -M 8 \
                -Y "$RUN_DIR" -P "$RUN_DIR/kamailio.pid" > "$logfile" 2>&1 &
            SUT_GROUP=$!
            ;;
        kordon)
            local cmd=$KORDON_CMD
            if [ -z "$cmd" ]; then
                [ -x "$KORDON_BIN" ] || { log "no $KORDON_BIN (cargo build --release)"; return 1; }
                [ -n "$KORDON_CONFIG" ] || { log "kordon needs --kordon-config (or --kordon-cmd)"; return 1; }
                local cfg=$RUN_DIR/kordon.toml
                sed -e "s/@LISTEN@/$LISTEN/g" -e "s/@UAS@/$UAS/g" "$KORDON_CONFIG" > "$cfg"
                cmd="exec '$KORDON_BIN' --config '$cfg' run"
            fi
            timeout -s TERM "$LIFETIME" nice -n "$NICE" taskset -c "$PROXY_CPU" \
                bash -c "$cmd" > "$logfile" 2>&1 &
            SUT_GROUP=$!
            ;;
    esac
    wait_udp "$LISTEN" "$SUT_GROUP" "$TARGET" || { tail -n 20 "$logfile" >&2; return 1; }
    # Threads or processes created later are pinned by inheritance; pin
    # everything that exists already as well.
    for p in $(pgrep -g "$SUT_GROUP"); do
        taskset -a -p -c "$PROXY_CPU" "$p" > /dev/null 2>&1 || true
    done
}

# The value of column $2 in the last row of SIPp's -trace_stat CSV $1.
stat_col() {
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        NF > 1 { v = $c } END { print (c && v != "") ? v + 0 : 0 }' "$1"
}

HEADER='| target | rate cps | window s | hold ms | attempted | succeeded | failed | failed % | retrans | achieved cps | SUT CPU s | SUT CPU ms/call | SIPp CPU % | CPU0 busy % | CPU1 busy % | UDP drops SUT/UAS | result |'
RULE='|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|'
row() { echo "$1" | tee -a "$REPORT"; }

# run_rate RATE -> 0 = pass, 1 = fail, 2 = could not run. Prints the row.
run_rate() {
    local rate=$1 calls limit stat rc t0 t1 g0 g1 c00 c01 c10 c11 u0 u1 drops_sut drops_uas
    calls=$((rate * DURATION))
    limit=$((rate * (HOLD / 1000 + 5) + 100))
    stat=$OUT/cps-$STAMP-uac-$rate.csv
    log "=== $TARGET at $rate cps: $calls calls, hold $HOLD ms, load $(cut -d' ' -f1-3 /proc/loadavg)"
    start_uas "$rate" || { cleanup; return 2; }
    start_sut "$rate" || { cleanup; return 2; }
    g0=$(group_ticks "$SUT_GROUP")
    u0=$(group_ticks "$UAS_GROUP")
    children_cpu > "$RUN_DIR/cpu0"
    c00=$(cpu_idle "$GEN_CPU")
    c10=$(cpu_idle "$PROXY_CPU")
    t0=$(date +%s.%N)
    rc=0
    nice -n "$NICE" taskset -c "$GEN_CPU" sipp -sn uac "$LISTEN" -i "$UAC_IP" -s "$CALLED" \
        -r "$rate" -m "$calls" -l "$limit" -d "$HOLD" -nostdin -buff_size "$SIPP_BUF" \
        -trace_stat -stf "$stat" -fd 1 \
        -trace_err -error_file "$OUT/cps-$STAMP-uac-$rate-errors.log" \
        -timeout "$((DURATION + HOLD / 1000 + 60))s" -timeout_error \
        > "$OUT/cps-$STAMP-uac-$rate.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    g1=$(group_ticks "$SUT_GROUP")
    u1=$(group_ticks "$UAS_GROUP")
    children_cpu > "$RUN_DIR/cpu1"
    c01=$(cpu_idle "$GEN_CPU")
    c11=$(cpu_idle "$PROXY_CPU")
    drops_sut=$(udp_drops "$LISTEN")
    drops_uas=$(udp_drops "$UAS")
    kill -0 -- "-$SUT_GROUP" 2> /dev/null || log "$TARGET died during the run (log: $OUT/cps-$STAMP-$TARGET-$rate.log)"
    cleanup

    local attempted succeeded failed
    attempted=$(stat_col "$stat" "OutgoingCall(C)")
    succeeded=$(stat_col "$stat" "SuccessfulCall(C)")
    retrans=$(stat_col "$stat" "Retransmissions(C)")
    [ "$attempted" -ge "$calls" ] || attempted=$calls # calls never started count as failed
    failed=$((attempted - succeeded))
    awk -v rate="$rate" -v dur="$DURATION" -v hold="$HOLD" -v att="$attempted" -v ok="$succeeded" \
        -v bad="$failed" -v re="$retrans" -v t0="$t0" -v t1="$t1" -v g0="$g0" -v g1="$g1" \
        -v c00="$c00" -v c01="$c01" -v c10="$c10" -v c11="$c11" -v tck="$TCK" -v maxf="$MAX_FAILED" \
        -v dsut="$drops_sut" -v duas="$drops_uas" -v u0="$u0" -v u1="$u1" -v s0="$(cat "$RUN_DIR/cpu0")" -v s1="$(cat "$RUN_DIR/cpu1")" \
        -v rc="$rc" -v target="$TARGET" '
        BEGIN {
            el = t1 - t0
            pct = att ? 100 * bad / att : 100
            cpu = (g1 - g0) / tck
            per = ok ? 1000 * cpu / ok : 0
            b0 = 100 * (1 - (c01 - c00) / tck / el); if (b0 < 0) b0 = 0
            b1 = 100 * (1 - (c11 - c10) / tck / el); if (b1 < 0) b1 = 0
            gen = 100 * ((u1 - u0) / tck + (s1 - s0)) / el
            slack = dur * 0.05; if (slack < 2) slack = 2
            late = el > dur + hold / 1000 + slack
            res = "pass"
            if (rc != 0 && rc != 1) res = "FAIL (sipp exit " rc ")"
            else if (pct >= maxf) res = "FAIL (failed calls)"
            else if (late) res = sprintf("FAIL (ran %.1f s: rate not kept)", el)
            printf "| %s | %d | %d | %d | %d | %d | %d | %.3f | %d | %.1f | %.2f | %.3f | %.0f | %.0f | %.0f | %d/%d | %s |\n",
                target, rate, dur, hold, att, ok, bad, pct, re, att / (el - hold / 1000), cpu, per, gen, b0, b1, dsut, duas, res
        }' | tee -a "$REPORT" | tee "$RUN_DIR/last-row"
    grep -q '| pass |$' "$RUN_DIR/last-row"
}

{
    echo "# Calls per second: $TARGET, $MODE${RATE:+ $RATE}, $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //');" \
        "system under test on CPU $PROXY_CPU, SIPp UAC and UAS on CPU $GEN_CPU (nice $NICE); load at start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "UAC $UAC_IP -> $TARGET $LISTEN -> UAS $UAS; SIPp built-in uac/uas scenarios; $DURATION s of calls per run, hold $HOLD ms."
    echo
} | tee "$REPORT"
row "$HEADER"
row "$RULE"

status=0
case "$MODE" in
    fixed)
        run_rate "$RATE" || status=$?
        ;;
    max)
        passed=0 failed_at=0
        for rate in $STEPS; do
            if run_rate "$rate"; then
                passed=$rate
                continue
            else
                st=$?
            fi
            if [ "$st" = 2 ]; then
                log "could not run at $rate cps: stopping"
                status=2
            else
                failed_at=$rate
            fi
            break
        done
        for _ in $(seq "$REFINE"); do
            [ "$status" = 0 ] && [ "$passed" -gt 0 ] && [ "$failed_at" -gt 0 ] || break
            mid=$(((passed + failed_at) / 2))
            [ "$mid" -ge 100 ] && mid=$((mid / 10 * 10))
            [ "$mid" -gt "$passed" ] && [ "$mid" -lt "$failed_at" ] || break
            if run_rate "$mid"; then
                passed=$mid
            else
                st=$?
                [ "$st" = 2 ] && { log "could not run at $mid cps: stopping"; status=2; break; }
                failed_at=$mid
            fi
        done
        if [ "$passed" -gt 0 ]; then
            above="lowest failing rate tried: $failed_at cps"
            [ "$failed_at" -gt 0 ] || above="no rate tried failed"
            summary="**Max sustained: $passed cps** for $DURATION s with < $MAX_FAILED % failed calls ($above)."
        elif [ "$status" = 2 ]; then
            summary="**Not measured**: the system under test or SIPp could not be started."
        else
            summary="**No rate passed** (lowest failing rate tried: $failed_at cps)."
            status=1
        fi
        printf '\n%s\n' "$summary" | tee -a "$REPORT"
        ;;
esac
log "report: $REPORT"
exit "$status"
