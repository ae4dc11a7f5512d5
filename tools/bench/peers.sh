#!/usr/bin/env bash
# peers.sh - the peer benchmark (mailtlsd beside nginx and a "direct"
# baseline in one run; doc/performance.md) with this tree's mailtlsd.
#
#   tools/bench/peers.sh --bench DIR [--binary BIN] [--base BIN]
#       [--work DIR] [--peers "direct nginx"] [--workers N] [-- run-peers options]
#
# --bench   the project owners' peer benchmark (run-peers.sh, mailload.c,
#           sink.c, ...; $MAILTLSD_PEER_BENCH); it is copied to --work
#           (default /tmp/mailtlsd-peer-bench) and built there, results go
#           to --work/results/<timestamp>/ (table.md, raw.txt).
# --binary  the mailtlsd measured, peer "new" on ports 26xxx (default
#           ./mailtlsd); --base adds a second build, peer "base" on 25xxx.
# --workers workers of both mailtlsd peers (default 1).
# Everything after -- goes to run-peers.sh (--rounds, --scenarios,
# --wait-quiet, --quick, ...; ./run-peers.sh --help).  `make bench` runs
# this with the build's mailtlsd and $(BENCH_ARGS).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=${MAILTLSD_PEER_BENCH:-} work=/tmp/mailtlsd-peer-bench
bin=./mailtlsd base= peers="direct nginx" workers=1
while (($#)); do
    case $1 in
    --bench) bench=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --binary) bin=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "peers.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -n $bench && -f $bench/run-peers.sh ]] ||
    { echo "peers.sh: --bench DIR (with run-peers.sh) is required" >&2; exit 2; }
abs() { (cd "$(dirname "$1")" && echo "$PWD/$(basename "$1")"); }
bin=$(abs "$bin")
[[ -x $bin ]] || { echo "peers.sh: no mailtlsd at $bin" >&2; exit 2; }
mkdir -p "$work"
# Refresh the copy, keeping its results and built certificates.
(cd "$bench" && tar -cf - --exclude=./results --exclude=./certs .) | (cd "$work" && tar -xf -)
make -s -C "$work" mailload sink
args=(--peers "$peers"
    --peer new="$here/peer/mailtlsd-peer.sh $bin warning $workers"
    --ports new=implicit:26465,implicit-rsa:26466,smtp:26025,imap:26143,pop3:26110)
if [[ -n $base ]]; then
    base=$(abs "$base")
    args+=(--peer base="$here/peer/mailtlsd-peer.sh $base warning $workers"
        --ports base=implicit:25465,implicit-rsa:25466,smtp:25025,imap:25143,pop3:25110)
fi
cd "$work" && exec ./run-peers.sh "${args[@]}" "$@"
