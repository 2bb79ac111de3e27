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

if [ "${1:-}" = "--test" ]; then
    pip install -q -e ".[test]"
    # The browser tests drive Debian's Chromium (no browser download).
    if [ ! -x /usr/bin/chromium ]; then
        if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "note: /usr/bin/chromium missing; install Debian's chromium package for the browser tests" >&2
        fi
    fi
else
    pip install -q -e .
fi
echo "ready: .venv/bin/leukemia"
