#!/usr/bin/env bash
# Compares RTP relays on this machine with one generator and one pinning:
# Kordon (io_uring and mmsg backends, one worker), kordon-fwd (a minimal
# recvmmsg/sendmmsg forwarder: the syscall ceiling) and rtpengine from Debian
# (userspace only). Relay on CPU 1, generator on CPU 0. See bench/README.md.
#
# Usage (from the repository root):
#   bench/compare.sh [--quick] [--relays LIST] [--duration S] [--warmup S]
#                    [--search-streams N] [--sessions N] [--no-build] [--no-sessions]
#
#   --quick            smoke run: 2 s windows, short search; a few minutes in all
#   --relays LIST      comma list among kordon-io_uring,kordon-mmsg,kordon-ng,fwd,rtpengine
#                      (kordon-ng: Kordon with io_uring, set up over its ng front door
#                      by the same ng driver as rtpengine)
#   --duration S       measuring window of each point (default 10)
#   --warmup S         full-rate warm-up before each window (default 2)
#   --search-streams N streams used by the max-rate search (default 1000)
#   --sessions N       idle sessions created over gRPC (default 10000)
#   --no-build         use the binaries already in target/release
#   --no-sessions      skip the gRPC session bench
#   --repeat N         run everything N times; the report shows medians
#   --nice N           nice value of relay and generator (default -10; 0 = as is)
#
# Writes bench/out/results-<stamp>-run<k>.jsonl (one JSON record per point),
# bench/out/report-<stamp>.md and the relays' logs; prints the markdown report.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out
BIN=$ROOT/target/release
LOADGEN=$BIN/kordon-loadgen
RELAY_CPU=1
GEN_CPU=0
GRPC_ADDR=127.0.0.1:50051
NG_ADDR=127.0.0.1:22222
FWD_BASE=2000
LIFETIME=1800            # every relay we start dies by itself after this (s)

QUICK=0
RELAYS=kordon-io_uring,kordon-mmsg,kordon-ng,fwd,rtpengine
DURATION=10
WARMUP=2
SEARCH_STREAMS=1000
SESSIONS=10000
BUILD=1
DO_SESSIONS=1
REPEAT=1
NICE=-10                 # relay and generator priority (other work disturbs them less)
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --relays) RELAYS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --search-streams) SEARCH_STREAMS=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-sessions) DO_SESSIONS=0 ;;
        --repeat) REPEAT=$2; shift ;;
        --nice) NICE=$2; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

GRID_RATES="50000 100000"
GRID_STREAMS="100 1000"
SEARCH_RATES="50000 100000 150000 200000 250000 300000 400000 500000 600000 800000 1000000"
SEARCH_DURATION=$DURATION
REFINE=2                 # bisection steps after the first failing rate
if [ "$QUICK" = 1 ]; then
    DURATION=2
    WARMUP=0.5
    SEARCH_DURATION=2
    SEARCH_RATES="50000 100000 200000 300000 400000 600000"
    REFINE=1
fi

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (relay on CPU $RELAY_CPU, generator on CPU $GEN_CPU)"
    exit 1
fi

mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT=$OUT/report-$STAMP.md
RESULT_FILES=()

# ---------------------------------------------------------------- build, deps
if [ "$BUILD" = 1 ]; then
    log "building (release)"
    cargo build --release -p kordon -p kordon-bench 2>&1 | tail -n 3 >&2 || {
        log "kordon did not build; building the bench alone (Kordon points will be skipped)"
        cargo build --release -p kordon-bench 2>&1 | tail -n 3 >&2
    }
fi
[ -x "$LOADGEN" ] || { log "missing $LOADGEN"; exit 1; }

case ",$RELAYS," in
    *,rtpengine,*)
        if ! command -v rtpengine > /dev/null; then
            log "installing rtpengine-daemon (Debian package)"
            # Keep the package's init scripts from starting the system service.
            made_policy=0
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
                chmod +x /usr/sbin/policy-rc.d
                made_policy=1
            fi
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -q rtpengine-daemon > "$OUT/apt.log" 2>&1 || {
                apt-get update -q >> "$OUT/apt.log" 2>&1
                apt-get install -y -q rtpengine-daemon >> "$OUT/apt.log" 2>&1
            }
            [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
        fi
        # If the package (or anything) started the system service, stop it.
        if command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now rtpengine-daemon > /dev/null 2>&1 || true
        fi
        service rtpengine-daemon stop > /dev/null 2>&1 || true
        ;;
esac

ulimit -n 1048576 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# ------------------------------------------------------------ relay lifecycle
WRAP_PID=""
RELAY_PID=""

stop_relay() {
    if [ -n "$RELAY_PID" ] && kill -0 "$RELAY_PID" 2> /dev/null; then
        kill -TERM "$RELAY_PID" 2> /dev/null || true
        for _ in $(seq 50); do
            kill -0 "$RELAY_PID" 2> /dev/null || break
            sleep 0.1
        done
        kill -KILL "$RELAY_PID" 2> /dev/null || true
    fi
    if [ -n "$WRAP_PID" ]; then
        wait "$WRAP_PID" 2> /dev/null || true
    fi
    RELAY_PID=""
    WRAP_PID=""
}
trap stop_relay EXIT
trap 'exit 130' INT TERM

# Starts "$@" pinned to the relay CPU under a lifetime limit; sets RELAY_PID
# (the relay itself, not the wrappers: taskset execs into it).
start_pinned() {
    local logfile=$1
    shift
    timeout -s TERM "$LIFETIME" nice -n "$NICE" taskset -c "$RELAY_CPU" "$@" > "$logfile" 2>&1 &
    WRAP_PID=$!
    RELAY_PID=""
    for _ in $(seq 50); do
        RELAY_PID=$(pgrep -P "$WRAP_PID" | head -n 1 || true)
        [ -n "$RELAY_PID" ] && break
        sleep 0.1
    done
    [ -n "$RELAY_PID" ]
}

write_kordon_config() { # backend internal_min internal_max external_min external_max file [ng_listen]
    cat > "$6" << EOF
[general]
log = "warn"

[dataplane]
workers = 1
cpus = [$RELAY_CPU]
backend = "$1"
grpc_listen = "$GRPC_ADDR"

[dataplane.interfaces.internal]
bind = "127.0.0.1"
advertised = "127.0.0.1"
port_min = $2
port_max = $3

[dataplane.interfaces.external]
bind = "127.0.0.1"
advertised = "127.0.0.1"
port_min = $4
port_max = $5

[metrics]
listen = ""

[ng]
listen = "${7:-}"
default_interface = "internal"
EOF
}

start_relay() { # label -> 0 when ready
    local label=$1 logfile=$OUT/$1-$STAMP-run${run:-1}.log
    case "$label" in
        kordon-io_uring|kordon-mmsg)
            [ -x "$BIN/kordon" ] || { log "$label: no $BIN/kordon"; return 1; }
            local backend=${label#kordon-} cfg=$OUT/$label.toml
            write_kordon_config "$backend" 20000 29999 30000 39999 "$cfg"
            start_pinned "$logfile" "$BIN/kordon" dataplane --config "$cfg" || return 1
            "$LOADGEN" wait-ready --target kordon --grpc "http://$GRPC_ADDR" --timeout 30 2>&1 | tail -n 1 >&2 || return 1
            ;;
        kordon-ng)
            [ -x "$BIN/kordon" ] || { log "$label: no $BIN/kordon"; return 1; }
            local cfg=$OUT/$label.toml
            write_kordon_config io_uring 20000 29999 30000 39999 "$cfg" "$NG_ADDR"
            start_pinned "$logfile" "$BIN/kordon" dataplane --config "$cfg" || return 1
            "$LOADGEN" wait-ready --target rtpengine --ng "$NG_ADDR" --timeout 30 2>&1 | tail -n 1 >&2 || return 1
            ;;
        fwd)
            start_pinned "$logfile" "$BIN/kordon-fwd" --pairs 1000 --base-port "$FWD_BASE" \
                --lifetime "$LIFETIME" || return 1
            "$LOADGEN" wait-ready --target fwd --fwd-base-port "$FWD_BASE" --timeout 30 2>&1 | tail -n 1 >&2 || return 1
            ;;
        rtpengine)
            command -v rtpengine > /dev/null || { log "rtpengine: not installed"; return 1; }
            start_pinned "$logfile" rtpengine --config-file=none --foreground --log-stderr \
                --log-level=4 --table=-1 --num-threads=1 --interface=127.0.0.1 \
                --listen-ng="$NG_ADDR" --port-min=10000 --port-max=19999 --delete-delay=0 \
                --timeout=600 --silent-timeout=600 || return 1
            "$LOADGEN" wait-ready --target rtpengine --ng "$NG_ADDR" --timeout 30 2>&1 | tail -n 1 >&2 || return 1
            # Every thread on the relay CPU, whenever it was created.
            taskset -a -p -c "$RELAY_CPU" "$RELAY_PID" > /dev/null
            ;;
        *) log "unknown relay $label"; return 1 ;;
    esac
    log "$label ready (pid $RELAY_PID, $(ls /proc/"$RELAY_PID"/task | wc -l) threads)"
}

target_of() {
    # kordon-ng is driven by the ng driver, exactly as rtpengine is.
    case "$1" in kordon-ng) echo rtpengine ;; kordon-*) echo kordon ;; *) echo "$1" ;; esac
}

# run_point label tag streams rate duration -> 0 = pass. A point that failed
# while other work ran on a bench CPU ("disturbed") is measured once more.
run_point() {
    local label=$1 tag=$2 streams=$3 rate=$4 duration=$5 line attempt
    for attempt in 1 2; do
        kill -0 "$RELAY_PID" 2> /dev/null || { log "$label: relay is gone"; return 2; }
        line=$(nice -n "$NICE" taskset -c "$GEN_CPU" "$LOADGEN" relay --target "$(target_of "$label")" \
            --grpc "http://$GRPC_ADDR" --ng "$NG_ADDR" --fwd-base-port "$FWD_BASE" \
            --streams "$streams" --rate "$rate" --duration "$duration" --warmup "$WARMUP" \
            --cpu "$GEN_CPU" --relay-pid "$RELAY_PID" --relay-cpu "$RELAY_CPU" \
            --label "$label" --tag "$tag" --json --out "$RESULTS" 2>> "$OUT/loadgen-$STAMP.log") || {
            log "$label $tag $streams streams @ $rate pps: loadgen failed (see $OUT/loadgen-$STAMP.log)"
            return 2
        }
        tail -n 1 "$OUT/loadgen-$STAMP.log" | cut -c1-400 >&2
        case "$line" in *'"pass":true'*) return 0 ;; esac
        case "$line" in *'"disturbed":true'*) [ "$attempt" = 1 ] && log "disturbed by other work: measuring again" && continue ;; esac
        return 1
    done
    return 1
}

# ------------------------------------------------------------------- the runs
log "load: $(cut -d' ' -f1-3 /proc/loadavg) (other work on this machine skews every figure; relay and generator run at nice $NICE)"
log "grid: rates [$GRID_RATES] x streams [$GRID_STREAMS], ${DURATION}s windows; search: [$SEARCH_RATES] with $SEARCH_STREAMS streams"

IFS=, read -r -a RELAY_LIST <<< "$RELAYS"
for run in $(seq "$REPEAT"); do
    RESULTS=$OUT/results-$STAMP-run$run.jsonl
    : > "$RESULTS"
    RESULT_FILES+=("$RESULTS")
    [ "$REPEAT" -gt 1 ] && log "##### run $run of $REPEAT"
    for label in "${RELAY_LIST[@]}"; do
        log "=== $label"
        if ! start_relay "$label"; then
            log "$label: did not start; skipped (log: $OUT/$label-$STAMP-run$run.log)"
            tail -n 5 "$OUT/$label-$STAMP-run$run.log" >&2 2> /dev/null || true
            stop_relay
            continue
        fi
        for rate in $GRID_RATES; do
            for streams in $GRID_STREAMS; do
                run_point "$label" grid "$streams" "$rate" "$DURATION" || true
            done
        done
        passed=0 failed=0
        for rate in $SEARCH_RATES; do
            if run_point "$label" search "$SEARCH_STREAMS" "$rate" "$SEARCH_DURATION"; then
                passed=$rate
                continue
            fi
            failed=$rate
            break # first failure ends the upward steps
        done
        # Bisect between the last pass and the first failure.
        for _ in $(seq "$REFINE"); do
            [ "$passed" -gt 0 ] && [ "$failed" -gt 0 ] || break
            mid=$(((passed + failed) / 2 / 5000 * 5000))
            [ "$mid" -gt "$passed" ] && [ "$mid" -lt "$failed" ] || break
            if run_point "$label" search "$SEARCH_STREAMS" "$mid" "$SEARCH_DURATION"; then
                passed=$mid
            else
                failed=$mid
            fi
        done
        stop_relay
    done

    if [ "$DO_SESSIONS" = 1 ]; then
        # Sessions ask for rtcp-mux (as WebRTC and most modern peers do): one
        # socket per leg, 2 descriptors per session (4 without mux).
        fd_limit=$(ulimit -n)
        if [ "$fd_limit" != unlimited ] && [ $((SESSIONS * 2 + 64)) -gt "$fd_limit" ]; then
            capped=$(((fd_limit - 64) / 2 / 100 * 100))
            log "descriptor limit $fd_limit (hard $(ulimit -Hn)) cannot hold $SESSIONS sessions x 2 sockets: measuring $capped"
            SESSIONS=$capped
        fi
        log "=== sessions: $SESSIONS idle sessions over gRPC (kordon, io_uring)"
        cfg=$OUT/kordon-sessions.toml
        # 10 000 RTP/RTCP port pairs per interface.
        write_kordon_config io_uring 10000 29999 30000 49999 "$cfg"
        if [ -x "$BIN/kordon" ] && start_pinned "$OUT/kordon-sessions-$STAMP-run$run.log" "$BIN/kordon" dataplane --config "$cfg" \
            && "$LOADGEN" wait-ready --target kordon --grpc "http://$GRPC_ADDR" --timeout 30 2>&1 | tail -n 1 >&2; then
            nice -n "$NICE" taskset -c "$GEN_CPU" "$LOADGEN" sessions --grpc "http://$GRPC_ADDR" --count "$SESSIONS" \
                --concurrency 64 --relay-pid "$RELAY_PID" --cpu "$GEN_CPU" --label kordon --rtcp-mux \
                --out "$RESULTS" || log "sessions bench failed"
        else
            log "kordon did not start for the sessions bench (log: $OUT/kordon-sessions-$STAMP-run$run.log)"
        fi
        stop_relay
    fi
done

"$LOADGEN" report "${RESULT_FILES[@]}" > "$REPORT"
{
    echo
    echo "Machine: $(nproc) CPUs, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); relay on CPU $RELAY_CPU, generator on CPU $GEN_CPU."
    echo "Raw records: ${RESULT_FILES[*]#"$ROOT"/}"
} >> "$REPORT"
cat "$REPORT"
