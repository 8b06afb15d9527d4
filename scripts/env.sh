# Sourced by the other scripts: default settings and the shared Dagster instance under WTA_HOME.
export WTA_HOME=${WTA_HOME:-$PWD/.wta}
export WTA_DATASET=${WTA_DATASET:-embedded}
export WTA_PRESET=${WTA_PRESET:-demo}
export DAGSTER_HOME=${DAGSTER_HOME:-$WTA_HOME/dagster}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
