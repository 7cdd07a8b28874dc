#!/usr/bin/env bash
# Builds Capsule and runs its tests with meson. This is the README's test command.
#
#   scripts/test.sh                     unit + integration + e2e, in build/
#   scripts/test.sh --sanitize          unit + integration under ASan+UBSan, in build-asan/
#   scripts/test.sh --suite unit        one suite (repeatable)
#
# Ends with a line "N passed, N failed, N skipped" and exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."

builddir=build
setup_args=()
suites=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) builddir=build-asan; setup_args+=(-Db_sanitize=address,undefined -Db_lundef=false) ;;
    --suite) suites+=("$2"); shift ;;
    --builddir) builddir=$2; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ ${#suites[@]} -eq 0 ]; then
  if [ "$builddir" = build-asan ]; then suites=(unit integration); else suites=(unit integration e2e); fi
fi

# The pinned guest kernel (the microVM integration tests boot it; the e2e image ships it): fetched
# once into the cache mkimage uses, never installed on this host.
cache=${CAPSULE_CACHE_DIR:-out/cache}
ktree=$(mkimage/fetch-kernel.sh cloud "$cache")
export CAPSULE_KERNEL=${CAPSULE_KERNEL:-$(realpath "$(ls "$ktree"/boot/vmlinuz-* | head -1)")}

if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" "${setup_args[@]}" >/dev/null
fi
ninja -C "$builddir" >/dev/null

if [ "$builddir" = build-asan ]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi

suite_args=()
for s in "${suites[@]}"; do suite_args+=(--suite "$s"); done
set +e
meson test -C "$builddir" --print-errorlogs --num-processes 1 "${suite_args[@]}"
rc=$?
set -e

python3 - "$builddir/meson-logs/testlog.json" <<'PY'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): passed += 1
    elif r == "SKIP": skipped += 1
    else: failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
import os
if os.environ.get("CAPSULE_TEST_TOTALS"):
    with open(os.environ["CAPSULE_TEST_TOTALS"], "a") as f:
        f.write(f"{passed} {failed} {skipped}\n")
PY
exit $rc
