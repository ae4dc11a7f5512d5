#!/bin/sh
# run.sh - build the protocol filter fuzzers, and those of the PROXY
# header parser, the stats listener's request parser and the TLSA answer
# parser, with libFuzzer and run them.
#
# Run by `make check` (automake's test-driver, cwd = build dir) or by hand:
#   sh tests/fuzz/run.sh                       # every harness, 20 s each
#   FUZZ_SECONDS=300 sh tests/fuzz/run.sh      # longer local runs
#   FUZZ_TARGETS="imap" sh tests/fuzz/run.sh   # a subset
#   REPRO=path/to/smtp-crash-... sh tests/fuzz/run.sh
#                                   # run one input, print its transcript
#                                   # (harness from the name's prefix or
#                                   # FUZZ_TARGETS)
# Environment: MAILTLSD_SRCDIR (source tree; default: two levels up),
# MAILTLSD_BUILDDIR (build tree, where findings are kept; default: cwd,
# or $TMPDIR when that is the source tree),
# CLANG (default clang), FUZZ_ARGS (more libFuzzer options),
# FUZZ_KEEP_TMP=1 (keep the work directory).
#
# Nothing is written into the source tree: harnesses are built and the
# seed corpora copied into one temporary directory.  Exit status: 0 no
# findings, 1 a finding (crash, sanitizer report, leak, timeout or a
# violated invariant; the input is kept under
# $MAILTLSD_BUILDDIR/fuzz-findings/), 77 (automake SKIP) without clang
# and libFuzzer, 99 on a build error.

here=$(cd "$(dirname "$0")" && pwd) || exit 99
MAILTLSD_SRCDIR=${MAILTLSD_SRCDIR:-$(cd "$here/../.." && pwd)}
MAILTLSD_BUILDDIR=${MAILTLSD_BUILDDIR:-$PWD}
CLANG=${CLANG:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_TARGETS=${FUZZ_TARGETS:-smtp imap pop3 btls diff proxy http tlsa}
src=$MAILTLSD_SRCDIR/src
fuzzdir=$MAILTLSD_SRCDIR/tests/fuzz

case $FUZZ_SECONDS in
''|*[!0-9]*)
	echo "run.sh: FUZZ_SECONDS must be a number of seconds" >&2
	exit 99
	;;
esac

if ! command -v "$CLANG" >/dev/null 2>&1; then
	echo "run.sh: SKIP: $CLANG not found (the fuzzers need clang with libFuzzer)"
	exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/mailtlsd-fuzz.XXXXXX") || exit 99
# shellcheck disable=SC2317	# called by the trap
cleanup() {
	if [ -n "$FUZZ_KEEP_TMP" ]; then
		echo "run.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# libFuzzer ships with clang but not always (e.g. no libclang-rt-dev).
cat > "$work/probe.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{ (void)d; (void)n; return 0; }
EOF
if ! "$CLANG" -fsanitize=fuzzer,address,undefined "$work/probe.c" \
    -o "$work/probe" >"$work/probe.log" 2>&1; then
	echo "run.sh: SKIP: $CLANG cannot build libFuzzer targets" \
	    "(-fsanitize=fuzzer,address,undefined):"
	sed 's/^/    /' "$work/probe.log" | head -5
	exit 77
fi

# The sources start with #include "config.h"; nothing in the filters
# depends on configure results, so an empty one keeps the build private.
mkdir -p "$work/inc" "$work/bin" && : > "$work/inc/config.h" || exit 99
libs=$(pkg-config --libs libevent libssl libcrypto 2>/dev/null) ||
    libs="-levent -lssl -lcrypto"
cflags=$(pkg-config --cflags libevent libssl libcrypto 2>/dev/null)

build() {
	echo "run.sh: building fuzz_$1"
	# The PROXY parser stands alone; the filter harnesses need the core.
	case $1 in
	proxy)	srcs="$src/proxy.c" ;;
	http)	srcs="$src/httpreq.c" ;;
	tlsa)	srcs="$src/dane.c $src/log.c $src/util.c -lresolv -lpthread" ;;
	*)	srcs="$src/filter.c $src/proto.c $src/proto_smtp.c
		    $src/proto_imap.c $src/proto_pop3.c $src/lineio.c
		    $src/log.c $src/util.c" ;;
	esac
	# shellcheck disable=SC2086
	"$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=all -std=c11 -D_GNU_SOURCE \
	    -I"$work/inc" -I"$src" $cflags \
	    -DOPENSSL_API_COMPAT=30000 -DOPENSSL_NO_DEPRECATED \
	    "$fuzzdir/fuzz_$1.c" $srcs $libs -o "$work/bin/fuzz_$1" \
	    >"$work/build-$1.log" 2>&1
	status=$?
	if [ $status -ne 0 ]; then
		echo "run.sh: building fuzz_$1 failed:" >&2
		cat "$work/build-$1.log" >&2
		exit 99
	fi
}

# ---------------------------------------------------------------------
# REPRO: one input, with its transcript.
if [ -n "$REPRO" ]; then
	if [ ! -r "$REPRO" ]; then
		echo "run.sh: cannot read $REPRO" >&2
		exit 99
	fi
	target=
	case $(basename "$REPRO") in
	smtp-*) target=smtp ;;
	imap-*) target=imap ;;
	pop3-*) target=pop3 ;;
	diff-*) target=diff ;;
	btls-*) target=btls ;;
	proxy-*) target=proxy ;;
	http-*) target=http ;;
	tlsa-*) target=tlsa ;;
	esac
	if [ -z "$target" ]; then
		# shellcheck disable=SC2086	# a word list
		set -- $FUZZ_TARGETS
		if [ $# -ne 1 ]; then
			echo "run.sh: REPRO: say which harness with" \
			    "FUZZ_TARGETS=smtp|imap|pop3|btls|diff|proxy|http|tlsa" \
			    >&2
			exit 99
		fi
		target=$1
	fi
	build "$target"
	FUZZ_VERBOSE=1 "$work/bin/fuzz_$target" "$REPRO"
	status=$?
	if [ $status -eq 0 ]; then
		echo "fuzz_$target: $REPRO: no finding"
		exit 0
	fi
	echo "fuzz_$target: $REPRO: reproduced (exit $status)"
	exit 1
fi

# ---------------------------------------------------------------------
# Fuzzing.
nice=
command -v nice >/dev/null 2>&1 && nice="nice -n 10"
failed=0
for target in $FUZZ_TARGETS; do
	case $target in
	smtp|imap|pop3|btls|diff|proxy|http|tlsa) ;;
	*)
		echo "run.sh: unknown harness '$target'" >&2
		exit 99
		;;
	esac
	build "$target"
	corpus=$work/corpus-$target
	mkdir -p "$corpus" "$work/findings" || exit 99
	if [ -d "$fuzzdir/corpus/$target" ]; then
		cp "$fuzzdir/corpus/$target"/* "$corpus"/ 2>/dev/null
		chmod u+w "$corpus"/* 2>/dev/null
	fi
	dict=
	[ -r "$fuzzdir/$target.dict" ] && dict=-dict=$fuzzdir/$target.dict
	log=$work/fuzz-$target.log
	# shellcheck disable=SC2086
	$nice "$work/bin/fuzz_$target" -max_total_time="$FUZZ_SECONDS" \
	    -rss_limit_mb=2048 -timeout=10 -max_len=8192 \
	    -print_final_stats=1 $dict \
	    -artifact_prefix="$work/findings/$target-" $FUZZ_ARGS \
	    "$corpus" >"$log" 2>&1
	status=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
	    tail -n 1)
	if [ $status -eq 0 ] && ! ls "$work/findings/$target-"* \
	    >/dev/null 2>&1; then
		echo "fuzz_$target: ${runs:-?} runs, no findings"
		continue
	fi
	failed=1
	echo "fuzz_$target: FINDING (exit $status) after ${runs:-?} runs"
	grep -E -A60 'INVARIANT VIOLATED|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)|runtime error' \
	    "$log" | head -n 80 | sed 's/^/    /'
	# Findings outlive the work directory, but never in the source tree.
	keep=$MAILTLSD_BUILDDIR/fuzz-findings
	if [ "$(cd "$MAILTLSD_BUILDDIR" 2>/dev/null && pwd)" = \
	    "$(cd "$MAILTLSD_SRCDIR" && pwd)" ]; then
		keep=${TMPDIR:-/tmp}/mailtlsd-fuzz-findings
	fi
	if mkdir -p "$keep" 2>/dev/null &&
	    cp "$work/findings/$target-"* "$keep"/ 2>/dev/null; then
		cp "$log" "$keep/fuzz-$target.log"
		for f in "$keep/$target-"*; do
			echo "    input: $f"
			echo "    replay: REPRO=$f sh $here/run.sh"
		done
	else
		echo "    (no input saved; log follows)"
		tail -n 60 "$log" | sed 's/^/    /'
	fi
done
exit $failed
