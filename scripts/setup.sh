#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the service needs.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --test   plus the test tools and headless Chromium (Debian package)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }

pip install -q --upgrade pip
# The same PyTorch everywhere (CI, laptops, workers): pinned here, a range in pyproject.
pip install -q torch==2.14.1 torchvision==0.29.1

# Debian's prometheus package, for its promtool only (tests/test_alerts.py checks deploy/'s rules and
# configuration with it). Its install must not leave a Prometheus server running on port 9090 that
# the tests' own processes might want: a policy-rc.d that refuses every service start is in place
# for the install (Docker's images carry one already), and a server systemd started anyway is stopped.
install_promtool() {
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null || true
    [ -n "$made_policy" ] && rm -f "$policy"
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
}

if [ "${1:-}" = "--test" ]; then
    pip install -q -e ".[test]"
    # The browser tests drive Debian's Chromium (no browser download).
    if [ ! -x /usr/bin/chromium ] || ! command -v promtool >/dev/null; then
        if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            [ -x /usr/bin/chromium ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
            command -v promtool >/dev/null || install_promtool
            command -v promtool >/dev/null || echo "note: promtool still missing after installing Debian's prometheus" >&2
        else
            echo "note: install Debian's chromium (browser tests) and prometheus (promtool, tests/test_alerts.py) packages" >&2
        fi
    fi
else
    pip install -q -e .
fi
echo "ready: .venv/bin/leukemia"
