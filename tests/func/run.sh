#!/bin/sh
# run.sh - the functional suite: real clients <-> mailtlsd <-> real backends.
#
# Run by `make check` (automake's test-driver, cwd = build dir) or by hand:
#   MAILTLSD_BIN=/path/to/mailtlsd sh tests/func/run.sh [pytest args]
# e.g. `-k smtps -x`; pytest runs in this directory, so test paths given as
# arguments are relative to it (test_cli.py::test_help).
# The source tree may be read-only (distcheck): nothing is written into it.
# Every temporary file lives under one mkdtemp, removed on exit unless
# MAILTLSD_KEEP_TMP is set.  The JUnit XML goes to $MAILTLSD_JUNIT
# (default ./func-junit.xml); CI counts the test cases in it.

here=$(cd "$(dirname "$0")" && pwd) || exit 99

MAILTLSD_BIN=${MAILTLSD_BIN:-/tmp/mt-build/mailtlsd}
MAILTLSD_SRCDIR=${MAILTLSD_SRCDIR:-$(cd "$here/../.." && pwd)}
JUNIT=${MAILTLSD_JUNIT:-$PWD/func-junit.xml}
case $JUNIT in
/*) ;;
*) JUNIT=$PWD/$JUNIT ;;
esac
export MAILTLSD_BIN MAILTLSD_SRCDIR

if [ ! -x "$MAILTLSD_BIN" ]; then
	echo "run.sh: mailtlsd binary $MAILTLSD_BIN not found" >&2
	exit 99			# a hard error for automake, not a skip
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mailtlsd-func.XXXXXX") || exit 99
# Dovecot's and Postfix's unprivileged processes traverse this directory.
chmod 755 "$work"
cleanup() {
	if [ -n "$MAILTLSD_KEEP_TMP" ]; then
		echo "run.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MAILTLSD_TEST_TMP=$work/t
TMPDIR=$work
PYTHONDONTWRITEBYTECODE=1
export MAILTLSD_TEST_TMP TMPDIR PYTHONDONTWRITEBYTECODE

# From the test directory, so that test ids read test_cli.py::test_help;
# --rootdir keeps pytest from looking for ini files above it, and
# -p no:cacheprovider from writing .pytest_cache into the source tree.
cd "$here" || exit 99
/usr/bin/python3 -m pytest -p no:cacheprovider -q -ra \
	--rootdir="$here" --junitxml="$JUNIT" "$@"
status=$?
if [ "$status" -eq 5 ]; then
	echo "run.sh: pytest collected no tests" >&2
	status=1
fi
exit "$status"
