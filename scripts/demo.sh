#!/usr/bin/env bash
# Set up, then materialise every asset of the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/python -m wta_dagster.main "$@"
