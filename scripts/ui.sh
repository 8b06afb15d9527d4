#!/usr/bin/env bash
# Set up, then serve the Dagster UI on loopback only, at http://127.0.0.1:${WTA_UI_PORT:-3000},
# over the instance that the CLI and the main job record their runs in.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${WTA_UI_PORT:-3000}"
