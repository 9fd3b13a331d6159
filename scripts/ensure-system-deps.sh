#!/bin/sh
# Install what the tests need from Debian when it is missing: babeltrace2 (the
# oracle every trace is checked against) and its Python bindings.
set -e
if command -v babeltrace2 >/dev/null 2>&1 && /usr/bin/python3 -c "import bt2" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ust: babeltrace2/python3-bt2 are missing and we are not root: run 'sudo apt-get install babeltrace2 python3-bt2'" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q babeltrace2 python3-bt2 >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q babeltrace2 python3-bt2 >/dev/null
}
