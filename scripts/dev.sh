#!/usr/bin/env bash
# Set up and run Tickerdash from a fresh clone. Needs only Python >= 3.11 with pip (and, for the browser
# tests, Debian's apt to install Chromium).
#   bash scripts/dev.sh up     set up, then run the whole system on this machine (tickerdash up)
#   bash scripts/dev.sh test   set up, then run lint, type checks and every test
# Extra arguments go to `tickerdash up` or to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TICKERDASH_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {  # $1: pip extras, e.g. "[test]"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtualenv $VENV"
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.tickerdash-installed$1"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing tickerdash$1 and its dependencies (first run takes a few minutes)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".$1"
        touch "$stamp"
    fi
}

ensure_chromium() {  # the browser tests drive Debian's Chromium; playwright cannot download its own here
    [ -x /usr/bin/chromium ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null; then
        echo "==> installing Debian's chromium for the browser tests"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
    else
        echo "warning: no /usr/bin/chromium and no apt-get: browser tests will be skipped" >&2
    fi
}

typecheck_tree() {  # mypy cannot follow the editable install's import hook: give it the installed layout as links
    local root=build/typecheck/tickerdash
    rm -rf build/typecheck && mkdir -p "$root"
    for entry in tickerdash/*; do ln -s "$PWD/$entry" "$root/"; done
    for floor in ingest simulator analytics dashboard; do ln -s "$PWD/$floor" "$root/$floor"; done
}

cmd="${1:-}"
shift || true
case "$cmd" in
    up)
        setup ""
        exec "$VENV/bin/tickerdash" up "$@"
        ;;
    test)
        setup "[test]"
        ensure_chromium
        echo "==> ruff"
        "$VENV/bin/ruff" check .
        echo "==> ruff format --check"
        "$VENV/bin/ruff" format --check .
        echo "==> mypy"
        typecheck_tree
        "$VENV/bin/mypy"
        echo "==> pytest"
        exec "$VENV/bin/pytest" "$@"
        ;;
    *)
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
