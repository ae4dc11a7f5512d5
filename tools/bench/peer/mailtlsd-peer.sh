#!/usr/bin/env bash
# mailtlsd-peer.sh BINARY [LOGLEVEL [WORKERS]]: render mailtlsd.conf.in (next
# to this script) from the variables run-peers.sh exports for an added peer,
# and exec mailtlsd.  See tools/bench/peers.sh.
set -eu
bin=$1 level=${2:-warning} workers=${3:-1}
here=$(cd "$(dirname "$0")" && pwd)
conf=$RUNDIR/mailtlsd-$(basename "$(dirname "$bin")")-$$-$level.conf
sed -e "s|@CERTS@|$CERTS|g" -e "s|@LOGLEVEL@|$level|g" -e "s|@WORKERS@|$workers|g" \
    -e "s|@P_IMPLICIT@|$PORT_IMPLICIT|g" -e "s|@P_IMPLICIT_RSA@|$PORT_IMPLICIT_RSA|g" \
    -e "s|@P_SMTP@|$PORT_SMTP|g" -e "s|@P_IMAP@|$PORT_IMAP|g" -e "s|@P_POP3@|$PORT_POP3|g" \
    -e "s|@SINK_SMTP@|$SINK_SMTP|g" -e "s|@SINK_IMAP@|$SINK_IMAP|g" -e "s|@SINK_POP3@|$SINK_POP3|g" \
    "$here/mailtlsd.conf.in" > "$conf"
exec "$bin" -c "$conf"
