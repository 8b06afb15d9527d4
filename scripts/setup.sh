#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the project with its test extras. Reruns are
# fast: pip is skipped while pyproject.toml is unchanged since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin=$candidate; break; fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "setup: no python3.11, python3.12 or python3 on PATH; install Python 3.11 and rerun" >&2
  exit 1
fi
# pyproject.toml allows Python 3.11 and 3.12 (requires-python = ">=3.11,<3.13").
if ! "$python_bin" -c 'import sys; raise SystemExit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
  echo "setup: $python_bin is $("$python_bin" --version 2>&1); WTA needs Python 3.11 or 3.12 (set PYTHON=...)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=.venv/.wta-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$wanted" > "$stamp"
fi
