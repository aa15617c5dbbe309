#!/usr/bin/env bash
# Set-up and entry points on a fresh Debian machine with Python 3.11:
#   ./run.sh demo [demo flags]   install, then run `provenance demo`
#   ./run.sh test [pytest args]  install with test extras, then run every test tier
set -euo pipefail
cd "$(dirname "$0")"

ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv 2>/dev/null; then
            echo "python3 -m venv failed: installing python3-venv" >&2
            rm -rf .venv
            SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
            $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
            python3 -m venv .venv
        fi
        .venv/bin/python -m pip install -q --upgrade pip
    fi
}

ensure_test_tools() {
    # Real outside tools the tests drive: Debian's Prometheus (the metrics scrape test),
    # docker-compose (validates docker-compose.yml; no Docker engine needed for `config`) and
    # Debian's Chromium with a font (the browser tests drive it through Playwright, never a browser
    # build of its own).
    local missing=()
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    [ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]} for the tests" >&2
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

cmd="${1:-}"; shift || true
case "$cmd" in
    demo)
        ensure_venv
        .venv/bin/python -m pip install -q -e .
        exec .venv/bin/provenance demo "$@"
        ;;
    test)
        ensure_venv
        .venv/bin/python -m pip install -q -e '.[test]'
        ensure_test_tools
        set +e
        .venv/bin/python -m pytest "$@"
        rc=$?
        set -e
        if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
        exit "$rc"
        ;;
    *)
        echo "usage: ./run.sh demo [flags] | ./run.sh test [pytest args]" >&2
        exit 2
        ;;
esac
