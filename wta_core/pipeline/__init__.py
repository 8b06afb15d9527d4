"""Stage functions that read and write one WTA home; the Dagster assets call these."""
