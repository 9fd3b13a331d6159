#!/bin/sh
# Install lttng's machine-interface schema (mi-lttng-4.1.xsd), which tests/test_mi.py validates
# `ust --mi xml` documents against. Debian's lttng-tools installs session.xsd but not this one, and
# ust does not carry a copy of lttng's text: it is taken from a git checkout of lttng-tools.
#   scripts/install-lttng-mi-xsd.sh LTTNG_TOOLS_GIT_DIR [REF]
# REF defaults to stable-2.14, whose 4.1 schema is 2.13's with three fixes to what lttng 2.13
# really writes (add-context's per-context <success>, snapshot's "record" action, start/stop
# action names). The schema goes to $UST_LTTNG_MI_XSD, default /usr/share/xml/lttng/mi-lttng-4.1.xsd.
set -e
repo="$1"
ref="${2:-stable-2.14}"
dest="${UST_LTTNG_MI_XSD:-/usr/share/xml/lttng/mi-lttng-4.1.xsd}"
if [ -z "$repo" ]; then
    echo "usage: $0 LTTNG_TOOLS_GIT_DIR [REF]" >&2
    exit 2
fi
mkdir -p "$(dirname "$dest")"
git --git-dir="$repo" show "$ref:src/common/mi-lttng-4.1.xsd" > "$dest.tmp" 2>/dev/null \
    || git -C "$repo" show "$ref:src/common/mi-lttng-4.1.xsd" > "$dest.tmp"
mv "$dest.tmp" "$dest"
echo "installed $dest (lttng-tools $ref)"
