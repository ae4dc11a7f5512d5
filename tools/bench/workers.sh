#!/usr/bin/env bash
# workers.sh - how mailtlsd's work spreads over its workers (doc/performance.md).
#
#   tools/bench/workers.sh --work DIR [--binary BIN] [--workers "1 2"]
#       [--cpus 1] [--rounds 2] [--conc 50] [--dur 5] [--idle 9000]
#
# --work is a built copy of the peer benchmark (what tools/bench/peers.sh
# leaves in /tmp/mailtlsd-peer-bench: mailload, sink, certs).  For each
# workers count, in turn for --rounds rounds: the sink and mailload run on
# CPU 0, mailtlsd on --cpus (taskset list); mailload runs implicit ECDSA
# sessions (--conc concurrent, --dur seconds).  Reported per run: sessions,
# proxy CPU microseconds per session (all threads, /proc/PID/stat), and per
# worker thread its share of the CPU (/proc/PID/task/TID/stat) and of the
# sessions (backend connect() calls counted per thread with
# `perf stat --per-thread -e syscalls:sys_enter_connect`; each session makes
# exactly one).  Then, once per workers count, --idle TLS sessions are
# opened and held (0 skips): errors, held, kB per session, per-worker
# shares.  Needs RLIMIT_NOFILE of 2 * idle + 100; every process is started
# under timeout(1) and stopped by PID.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=/tmp/mailtlsd-peer-bench bin=./mailtlsd wlist="1 2" cpus=1 rounds=2 conc=50 dur=5 idle=9000
while (($#)); do
    case $1 in
    --work) work=$2; shift 2 ;;
    --binary) bin=$2; shift 2 ;;
    --workers) wlist=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --conc) conc=$2; shift 2 ;;
    --dur) dur=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "workers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
bin=$(cd "$(dirname "$bin")" && echo "$PWD/$(basename "$bin")")
[[ -x $work/mailload && -x $work/sink && -d $work/certs ]] ||
    { echo "workers.sh: $work has no built mailload, sink and certs (run peers.sh first)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export RUNDIR=$(mktemp -d /tmp/mailtlsd-workers.XXXXXX) CERTS=$work/certs SINK_HOST=127.0.0.1
export PORT_IMPLICIT=27465 PORT_IMPLICIT_RSA=27466 PORT_SMTP=27025 PORT_IMAP=27143 PORT_POP3=27110
export SINK_SMTP=27925 SINK_IMAP=27943 SINK_POP3=27910
have_perf=0
command -v perf >/dev/null && perf stat -e syscalls:sys_enter_connect -- true >/dev/null 2>&1 && have_perf=1

taskset -c 0 timeout -k 5 3600 "$work/sink" -t 3600 -L "smtp:plain:$SINK_SMTP" \
    -L "imap:plain:$SINK_IMAP" -L "pop3:plain:$SINK_POP3" >"$RUNDIR/sink.out" 2>&1 &
sink=$!
tpid= mpid=
stop_mt() {
    [[ -n $tpid ]] && kill "$tpid" 2>/dev/null && wait "$tpid" 2>/dev/null || true
    tpid= mpid=
}
cleanup() { stop_mt; kill "$sink" 2>/dev/null || true; rm -rf "$RUNDIR"; }
trap cleanup EXIT

start_mt() { # workers
    taskset -c "$cpus" timeout -k 5 3600 "$here/peer/mailtlsd-peer.sh" "$bin" warning "$1" \
        >"$RUNDIR/mt.out" 2>&1 &
    tpid=$!
    local i
    for i in $(seq 50); do
        mpid=$(pgrep -P "$tpid" | head -1 || true)
        [[ -n $mpid ]] && (exec 3<>/dev/tcp/127.0.0.1/$PORT_IMPLICIT) 2>/dev/null && return 0
        sleep 0.2
    done
    echo "workers.sh: mailtlsd did not start" >&2; cat "$RUNDIR/mt.out" >&2; exit 1
}
ticks() { # pid: "tid ticks" for every thread but the main one
    local t
    for t in /proc/$1/task/*; do
        [[ ${t##*/} == "$1" ]] && continue
        awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$t/stat" | sed "s|^|${t##*/} |"
    done
}
# measure LABEL MAILLOAD-ARGS...: run mailload, print the per-worker figures
measure() {
    local label=$1; shift
    local before after out perfout
    before=$(ticks "$mpid")
    perfout=$RUNDIR/perf.txt; : >"$perfout"
    if ((have_perf)); then
        perf stat --per-thread -x, -e syscalls:sys_enter_connect -p "$mpid" -o "$perfout" &
        local perfpid=$!
        sleep 0.3
    fi
    out=$(taskset -c 0 timeout 900 "$work/mailload" "$@" -p "$PORT_IMPLICIT" -W "$mpid" 2>>"$RUNDIR/mailload.err")
    if ((have_perf)); then kill -INT "$perfpid" 2>/dev/null; wait "$perfpid" 2>/dev/null || true; fi
    after=$(ticks "$mpid")
    awk -v label="$label" -v out="$out" -v perf="$perfout" '
        BEGIN { n = split(out, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); m[p[1]] = p[2] }
                while ((getline l < perf) > 0) { nf = split(l, f, ","); if (nf >= 2 && f[1] ~ /-[0-9]+$/) {
                    t = f[1]; sub(/^.*-/, "", t); conn[t] = f[2] + 0; tc += f[2] } } }
        FNR == NR { b[$1] = $2; next }
        { d[$1] = $2 - b[$1]; tot += d[$1]; ids[++k] = $1 }
        END {
            printf "%s: completed=%s errors=%s proxy_us_per_conn=%s", label, m["completed"], m["errors"], m["proxy_us_per_conn"]
            if (m["held"] != "") {
                kb = m["held"] > 0 ? (m["proxy_rss_held_kb"] - m["proxy_rss_start_kb"]) / m["held"] : 0
                printf " held=%s kB_per_session=%.1f", m["held"], kb
            }
            # Threads that did nothing (not workers, or idle) are left out.
            for (i = 1; i <= k; i++) {
                if (d[ids[i]] == 0 && conn[ids[i]] == 0)
                    continue
                printf " | thread %s cpu %.0f%%%s", ids[i], tot ? 100 * d[ids[i]] / tot : 0,
                    tc ? sprintf(" sessions %.0f%%", 100 * conn[ids[i]] / tc) : ""
            }
            printf "\n"
        }' <(echo "$before") <(echo "$after")
}

echo "workers.sh: $bin, mailtlsd on CPUs $cpus, load and sink on CPU 0, conc $conc, ${dur}s runs$( ((have_perf)) || echo ', no perf: no per-worker sessions')"
for r in $(seq "$rounds"); do
    for w in $wlist; do
        start_mt "$w"
        taskset -c 0 "$work/mailload" -m implicit -p "$PORT_IMPLICIT" -c 8 -n 16 >/dev/null 2>&1 || true
        measure "round $r workers=$w impl-ec" -m implicit -c "$conc" -d "$dur"
        stop_mt
    done
done
if ((idle > 0)); then
    for w in $wlist; do
        start_mt "$w"
        measure "workers=$w idle-$idle" -m idle -c "$idle" -t 1 -R 64 -d 120
        stop_mt
    done
fi
