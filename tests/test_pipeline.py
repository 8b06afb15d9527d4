"""The whole smoke main job: every table, adapter, trajectory and check it leaves behind."""

from __future__ import annotations

import math
import shutil

import dagster as dg
import numpy as np
import torch
from peft import PeftModel

from wta_core.config import get_preset
from wta_core.model import load_base_model
from wta_core.paths import WtaPaths
from wta_core.pipeline.generation import generate_trajectories, load_trajectory
from wta_core.storage import TableStore

SMOKE = get_preset("smoke")
GENRES = ["chorale", "fiddle", "quartet"]


def store(home) -> TableStore:
    return TableStore(home / "wta.duckdb")


def test_tracks_cover_three_genres(smoke_run):
    ok = store(smoke_run).read("SELECT DISTINCT genre FROM tracks WHERE status = 'ok' ORDER BY genre")
    assert ok["genre"].to_list() == GENRES


def test_adapters_table_lists_every_subset(smoke_run):
    adapters = store(smoke_run).read_table("adapters").sort("adapter_id")
    kinds = dict(zip(adapters["adapter_id"].to_list(), adapters["kind"].to_list()))
    assert kinds["full"] == "full"
    assert [k for k, v in kinds.items() if v == "control"] == ["control-1", "control-2", "control-3"]
    assert sorted(k for k, v in kinds.items() if v == "loo") == GENRES
    assert sorted(k for k, v in kinds.items() if v == "dose") == ["dose-25", "dose-50", "dose-75"]
    assert kinds["noise"] == "noise"
    assert set(adapters["steps"].to_list()) == {SMOKE.lora.steps}
    assert all(len(value) == 64 for value in adapters["sha256"].to_list())


def test_adapter_loads_with_peft(smoke_run):
    paths = WtaPaths(smoke_run)
    folder = paths.adapter_dir("chorale")
    assert (folder / "adapter_config.json").exists()
    assert (folder / "adapter_model.safetensors").exists()
    model = PeftModel.from_pretrained(load_base_model(paths.base_model_dir), str(folder))
    lora_weights = [name for name, _ in model.named_parameters() if "lora_" in name]
    assert lora_weights


def test_subset_members_skip_removed_genre(smoke_run):
    rows = store(smoke_run).read(
        "SELECT t.genre, count(*) AS n FROM subset_members m JOIN tracks t USING (track_id) "
        "WHERE m.subset_id = 'fiddle' GROUP BY t.genre ORDER BY t.genre")
    assert rows["genre"].to_list() == ["chorale", "quartet"]


def test_scores_cover_every_loo_cell(smoke_run):
    scores = store(smoke_run).read(
        "SELECT * FROM wta_scores WHERE kind = 'loo' AND target = 'latent'")
    assert scores.height == len(GENRES) * len(GENRES) * len(SMOKE.sample.seeds)
    assert np.isfinite(scores["score"].to_numpy()).all()
    assert np.isfinite(scores["z_score"].to_numpy()).all()
    p_values = scores["p_value"].to_numpy()
    assert ((p_values > 0) & (p_values <= 1)).all()


def test_step_distances_one_row_per_step(smoke_run):
    counts = store(smoke_run).read(
        "SELECT adapter_id, prompt, seed, count(*) AS n FROM step_distances "
        "WHERE target = 'latent' GROUP BY ALL")
    assert set(counts["n"].to_list()) == {SMOKE.sample.steps}
    assert counts.height == 10 * len(GENRES) * len(SMOKE.sample.seeds)


def test_validation_results_has_eleven(smoke_run):
    results = store(smoke_run).read("SELECT * FROM validation_results ORDER BY test_id")
    assert results["test_id"].to_list() == list(range(1, 12))
    assert set(results["verdict"].to_list()) <= {"PASS", "FAIL", "NOT RUN"}
    assert (smoke_run / "reports" / "validation_report.md").exists()
    assert (smoke_run / "reports" / "validation_report.json").exists()


def test_validation_checks_in_instance(smoke_run):
    instance = dg.DagsterInstance.from_config(str(smoke_run / "dagster"))
    from wta_dagster.assets.validation import CHECK_SPECS

    assert len(CHECK_SPECS) == 11
    for spec in CHECK_SPECS:
        record = instance.get_latest_asset_check_evaluation_record(spec.key)
        assert record is not None, spec.name
    keys = instance.get_latest_materialization_events(
        [dg.AssetKey(name) for name in ("gtzan_dataset", "base_model", "validation_report")])
    assert all(event is not None for event in keys.values())


def test_trajectories_bit_identical_on_rerun(smoke_run, tmp_path):
    paths = WtaPaths(smoke_run)
    stored = load_trajectory(paths, "quartet")
    # Sampling again writes the same file; compare the tensors before and after.
    before = stored.latents.clone()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count of the training resource in the definitions
    try:
        again = generate_trajectories(paths, SMOKE, "embedded", "quartet")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(before, again.latents)
    assert torch.equal(stored.predicted_clean, again.predicted_clean)


def test_trajectory_index_rows(smoke_run):
    rows = store(smoke_run).read("SELECT * FROM trajectories WHERE adapter_id = 'full' ORDER BY genre, seed")
    assert rows.height == len(GENRES) * len(SMOKE.sample.seeds)
    assert set(rows["steps"].to_list()) == {SMOKE.sample.steps}
    assert set(rows["dtype"].to_list()) == {SMOKE.sample.store_dtype}


def test_calibration_against_controls(smoke_run):
    calibration = store(smoke_run).read("SELECT DISTINCT calibration FROM wta_scores")
    notes = calibration["calibration"].to_list()
    assert notes == [f"against {3 * len(GENRES) * len(SMOKE.sample.seeds)} control replicate scores"]


def test_score_summary_view(smoke_run):
    summary = store(smoke_run).read(
        "SELECT * FROM score_summary WHERE adapter_id = 'chorale' AND target = 'latent'")
    assert summary.height == len(GENRES)
    assert set(summary["seeds"].to_list()) == {len(SMOKE.sample.seeds)}
    assert all(not math.isnan(value) for value in summary["std_score"].to_list())


def test_method_comparison_has_four_methods(smoke_run):
    rows = store(smoke_run).read("SELECT method, metric, value FROM method_comparison")
    assert sorted(set(rows["method"].to_list())) == [
        "destination-only", "embedding-mfcc-chroma", "tracin-lora", "wta"]
    metrics = {"top1_prompt_genre", "spearman_effect", "top1_effect", "lds", "seconds", "retrainings"}
    for method in set(rows["method"].to_list()):
        assert set(rows.filter(rows["method"] == method)["metric"].to_list()) == metrics, method
    assert (smoke_run / "reports" / "method_comparison.png").exists()


def test_lds_adapters_same_in_one_process(smoke_run, tmp_path):
    # The smoke run trains its LDS adapters in two worker processes; one at a time in this
    # process must give the same bytes.
    from tests.pipeline_fixtures import copy_home
    from wta_core.comparison.metrics import lds_masks
    from wta_core.pipeline.comparison_run import LDS_SEED, _lds_adapter_id, _train_lds_adapters

    home = copy_home(smoke_run, tmp_path / "home")
    paths = WtaPaths(home)
    masks = lds_masks(GENRES, SMOKE.lds_subsets, LDS_SEED)
    removed = {index: {genre for genre, drop in zip(GENRES, mask) if drop} for index, mask in enumerate(masks)}
    for index in removed:
        adapter = paths.adapter_dir(_lds_adapter_id(index))
        assert (adapter / "adapter_model.safetensors").exists()
        for folder in (adapter, paths.checkpoint_dir(_lds_adapter_id(index))):
            if folder.exists():
                shutil.rmtree(folder)
    _train_lds_adapters(paths, SMOKE, "embedded", removed, None, 1, workers=1)
    for index in removed:
        name = f"adapters/{_lds_adapter_id(index)}/adapter_model.safetensors"
        assert (home / name).read_bytes() == (smoke_run / name).read_bytes(), name
