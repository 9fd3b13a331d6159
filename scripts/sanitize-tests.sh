#!/bin/sh
# Run the core's tests against an ASan+UBSan build of the C extension.
#   sh scripts/sanitize-tests.sh [pytest args]
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
inc=$($py -c "import sysconfig; print(sysconfig.get_paths()['include'])")
suffix=$($py -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
cp -r "$root/src" "$work/src"
gcc -std=gnu11 -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -shared -fPIC -I"$inc" \
    "$root/src/ust/_ring/ring.c" -o "$work/src/ust/_ring/_ring$suffix"
cd "$root"
LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1 \
    PYTHONPATH="$work/src" "$py" -m pytest -q -p no:cacheprovider --basetemp="$work/pt" \
    ${@:-tests/test_ring.py tests/test_tracepoint.py tests/test_session.py}
rm -rf "$work"
