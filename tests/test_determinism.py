"""Two smoke runs from empty homes store identical scores and validation results on the CPU.

The shared smoke run trains its partitions with the default number of workers, two on a
2-core machine. The second run here trains them one at a time, so the test also shows that
parallel partitions change no bit of the results.
"""

from __future__ import annotations

import pytest
from polars.testing import assert_frame_equal

from tests.pipeline_fixtures import prepare_home
from wta_core.storage import TableStore

SORT_KEYS = {
    "wta_scores": ["adapter_id", "target", "prompt", "seed"],
    "validation_results": ["test_id"],
}


@pytest.mark.slow
def test_two_smoke_runs_identical_sequential_and_parallel(smoke_run, tmp_path, render_cache):
    from wta_dagster.main import main

    second = tmp_path / "home"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in prepare_home(second, render_cache).items():
            patch.setenv(key, value)
        assert main(["--workers", "1"]) == 0

    for table, keys in SORT_KEYS.items():
        query = f"SELECT * FROM {table} ORDER BY {', '.join(keys)}"
        first_rows = TableStore(smoke_run / "wta.duckdb").read(query)
        second_rows = TableStore(second / "wta.duckdb").read(query)
        assert first_rows.height > 0, table
        assert_frame_equal(second_rows, first_rows, check_exact=True)
