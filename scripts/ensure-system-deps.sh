#!/bin/sh
# Install what the tests need from Debian when it is missing: babeltrace2 (the
# oracle every trace is checked against) and its Python bindings; lttng-tools
# and xmllint (the real `lttng load` and lttng's session.xsd check the session
# files `ust save` writes); iproute2 (`ip netns`: the relay's many-hosts tests);
# python3-lttnganalyses (the real lttng-analyses run on ust's kernel traces).
set -e
PACKAGES="babeltrace2 python3-bt2 lttng-tools libxml2-utils iproute2 python3-lttnganalyses"
if command -v babeltrace2 >/dev/null 2>&1 && /usr/bin/python3 -c "import bt2" >/dev/null 2>&1 \
        && command -v lttng-sessiond >/dev/null 2>&1 && command -v xmllint >/dev/null 2>&1 \
        && command -v ip >/dev/null 2>&1 && command -v lttng-cputop-mi >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ust: some of $PACKAGES are missing and we are not root: run 'sudo apt-get install $PACKAGES'" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q $PACKAGES >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q $PACKAGES >/dev/null
}
