#!/usr/bin/env bash
# Install what mailtlsd needs to build, and what its test suite and demo
# run against, from Debian 12's packages.  Safe to run again.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: run as root (apt-get)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Postfix asks a question on install unless it is answered beforehand.
echo "postfix postfix/main_mailer_type select No configuration" |
	debconf-set-selections

BUILD="build-essential autoconf automake libtool pkg-config
	libevent-dev libssl-dev libconfuse-dev libcmocka-dev libsystemd-dev"
# Real peers and clients used by the tests and the demo (unbound and
# ldnsutils: the signed zone and validating resolver of test_dane.py).
PEERS="openssl ca-certificates curl swaks libnet-ssleay-perl
	libio-socket-ssl-perl dovecot-imapd dovecot-pop3d postfix
	python3 python3-pytest python3-aiosmtpd procps iproute2 mandoc haproxy
	fetchmail systemd python3-prometheus-client python3-yaml
	unbound ldnsutils"
# Fuzzing (libFuzzer) and sanitizers with clang.
FUZZ="clang libclang-rt-14-dev"

apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $BUILD $PEERS $FUZZ

# Legacy backends for the functional tests: Exim 4.96 (SMTP) and
# Courier-IMAP/POP3 with courier-authlib.  As packages they conflict with
# Postfix and Dovecot (one MTA, one IMAP server per Debian system), as
# files they do not: their .debs are unpacked into a private root,
# $MAILTLSD_LEGACY_ROOT (default /opt/mailtlsd-legacy), which
# tests/func/legacy_util.py runs them from with private configurations.
# Nothing is installed as those packages and no service is started; only
# the libraries they link against are installed normally.  The root is
# rebuilt only when the candidate versions change (stamp file), and is
# replaced as a whole (a new directory renamed into place).
LEGACY_ROOT=${MAILTLSD_LEGACY_ROOT:-/opt/mailtlsd-legacy}
LEGACY_DEBS="exim4-base exim4-daemon-light courier-base courier-imap
	courier-pop courier-authlib courier-authdaemon courier-authlib-userdb"
# shellcheck disable=SC2086
stamp=$(apt-cache policy $LEGACY_DEBS |
	awk '/^[^ ]/ { p = $1 } /Candidate:/ { print p, $2 }')
if [ "$(cat "$LEGACY_ROOT/.stamp" 2>/dev/null)" != "$stamp" ]; then
	dl=$(mktemp -d)
	# apt's download sandbox user must be able to write there.
	chown _apt "$dl" 2>/dev/null || chmod 777 "$dl"
	# shellcheck disable=SC2086
	(cd "$dl" && apt-get download $LEGACY_DEBS)
	rm -rf "$LEGACY_ROOT.new"
	mkdir -p "$LEGACY_ROOT.new"
	for deb in "$dl"/*.deb; do
		dpkg-deb -x "$deb" "$LEGACY_ROOT.new"
	done
	# The libraries they need, from their own Depends (first alternative).
	for deb in "$dl"/*.deb; do
		dpkg-deb -f "$deb" Depends Pre-Depends
	done | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' |
		grep '^lib' | sort -u > "$LEGACY_ROOT.new/.libs"
	# shellcheck disable=SC2046
	apt-get install -y --no-install-recommends $(cat "$LEGACY_ROOT.new/.libs")
	rm -rf "$dl"
	printf '%s\n' "$stamp" > "$LEGACY_ROOT.new/.stamp"
	rm -rf "$LEGACY_ROOT"
	mv "$LEGACY_ROOT.new" "$LEGACY_ROOT"
fi
# Exim refuses to run without its system user (compiled in).
if ! getent passwd Debian-exim > /dev/null; then
	useradd --system --user-group --no-create-home \
		--home-dir /var/spool/exim4 --shell /usr/sbin/nologin Debian-exim
fi
# Courier's configuration and authdaemon socket paths are compiled in
# (/etc/courier, /run/courier); the tests bind-mount private directories
# there inside a mount namespace of their own (unshare), which needs the
# mount points to exist.  Empty directories; nothing is put in them.
mkdir -p /etc/courier /run/courier
