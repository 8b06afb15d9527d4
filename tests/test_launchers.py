"""Training through the Pipes launcher, and the precision of float16 trajectory storage."""

from __future__ import annotations

import shutil

import dagster as dg
import numpy as np
import torch

from tests.pipeline_fixtures import copy_home
from wta_core.config import get_preset
from wta_core.diffusion import sample_trajectory
from wta_core.paths import WtaPaths
from wta_core.pipeline.base import prompt_table
from wta_core.pipeline.generation import load_denoiser, load_trajectory
from wta_core.storage import TableStore
from wta_core.transport import step_distances

SMOKE = get_preset("smoke")
# Measured on the smoke run: float16 storage moved per-step distances by under 0.1% of their
# value; the bound leaves room for other seeds and machines.
FLOAT16_RELATIVE_TOLERANCE = 5e-3


def test_pipes_launcher_matches_in_process(smoke_run, tmp_path, monkeypatch):
    from wta_dagster.assets.adapters import lora_adapters
    from wta_dagster.compute import TrainingResource
    from wta_dagster.resources import WtaSettings

    home = copy_home(smoke_run, tmp_path / "home")
    store = TableStore(home / "wta.duckdb")
    in_process_sha = store.read_table("adapters", {"adapter_id": "fiddle"})["sha256"][0]
    shutil.rmtree(home / "adapters" / "fiddle")
    monkeypatch.setenv("WTA_HOME", str(home))

    result = dg.materialize(
        [lora_adapters], partition_key="fiddle", selection=[lora_adapters],
        resources={"settings": WtaSettings(home=str(home), dataset="embedded", preset="smoke"),
                   "training": TrainingResource(device="cpu", num_threads=1, launcher="pipes"),
                   "pipes_client": dg.PipesSubprocessClient()},
    )
    assert result.success
    assert store.read_table("adapters", {"adapter_id": "fiddle"})["sha256"][0] == in_process_sha
    metadata = result.asset_materializations_for_node("lora_adapters")[0].metadata
    assert metadata["sha256"].value == in_process_sha


def test_float16_storage_keeps_distances(smoke_run):
    paths = WtaPaths(smoke_run)
    genres, prompts, embeddings = prompt_table(["chorale", "fiddle", "quartet"], "embedded")
    shape = (SMOKE.audio.n_mels, SMOKE.audio.clip_frames)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            exact = {adapter: sample_trajectory(load_denoiser(paths, adapter), embeddings, list(SMOKE.sample.seeds),
                                                SMOKE.sample.steps, SMOKE.sample.guidance_scale, shape)
                     for adapter in ("full", "chorale")}
    finally:
        torch.set_num_threads(threads)
    stored = {adapter: load_trajectory(paths, adapter) for adapter in ("full", "chorale")}
    assert stored["full"].latents.dtype == torch.float32  # upcast on load from float16
    worst = 0.0
    for g in range(len(genres)):
        for s in range(len(SMOKE.sample.seeds)):
            reference = step_distances(exact["chorale"].latents[g, s].numpy(), exact["full"].latents[g, s].numpy())
            from_disk = step_distances(stored["chorale"].latents[g, s].numpy(), stored["full"].latents[g, s].numpy())
            worst = max(worst, float(np.max(np.abs(from_disk - reference) / np.maximum(reference, 1e-12))))
    assert worst < FLOAT16_RELATIVE_TOLERANCE
