#!/bin/sh
# Install missing Debian/Ubuntu packages when running as root; otherwise list what is missing.
# Usage: ensure-debs.sh [--required] PKG...
#   --required: exit non-zero if packages are missing and cannot be installed (non-root).
required=0
if [ "$1" = "--required" ]; then required=1; shift; fi
missing=""
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "camwatch setup: apt-get not found; please install the equivalents of:$missing" >&2
    [ $required -eq 1 ] && exit 1 || exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    echo "camwatch setup: installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || { echo "camwatch setup: apt-get update failed" >&2; exit 1; }
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null \
        || { echo "camwatch setup: apt-get install failed for:$missing" >&2; exit 1; }
    exit 0
fi
echo "camwatch setup: not root, so these system packages were not installed:$missing" >&2
echo "  run: sudo apt-get install$missing" >&2
[ $required -eq 1 ] && exit 1
exit 0
