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
# Real peers and clients used by the tests and the demo.
PEERS="openssl ca-certificates curl swaks libnet-ssleay-perl
	libio-socket-ssl-perl dovecot-imapd dovecot-pop3d postfix
	python3 python3-pytest python3-aiosmtpd procps iproute2 mandoc
	fetchmail systemd"
# Fuzzing (libFuzzer) and sanitizers with clang.
FUZZ="clang libclang-rt-14-dev"

apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $BUILD $PEERS $FUZZ
