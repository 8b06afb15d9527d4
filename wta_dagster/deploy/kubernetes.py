"""The same assets on Kubernetes: one pod per step, training in a GPU pod started through Pipes.

Load it as a code location (`dagster dev -m wta_dagster.deploy.kubernetes`, or in a Helm
deployment's workspace). What runs where:

- The Dagster webserver, daemon and run launcher live in the cluster as usual.
- `k8s_job_executor` runs every step of a run as its own Kubernetes job, so partitions of a
  backfill spread over the cluster; `max_concurrent` caps the jobs of one run.
- `lora_adapters` and `method_comparison` train through `TrainingResource(launcher="pipes")`;
  here its Pipes client is `PipesK8sClient`, which starts `python -m wta_dagster.pipes_train`
  in a pod that requests one GPU (`WTA_K8S_TRAINING_IMAGE`, the project's image).
- Every pod mounts the same `WTA_HOME` volume (`WTA_K8S_HOME_CLAIM`, a ReadWriteMany claim),
  because adapters, trajectories and the DuckDB file live there.

NOTE: this module is checked only for loading (tests/test_deploy.py); no cluster was reachable
where it was written.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_k8s import PipesK8sClient, k8s_job_executor

from wta_dagster.compute import TrainingResource
from wta_dagster.definitions import ASSET_MODULES
from wta_dagster.resources import WtaSettings

HOME_MOUNT = "/wta"
HOME_CLAIM = os.environ.get("WTA_K8S_HOME_CLAIM", "wta-home")
TRAINING_IMAGE = os.environ.get("WTA_K8S_TRAINING_IMAGE", "wta:latest")

_volume = {"name": "wta-home", "persistent_volume_claim": {"claim_name": HOME_CLAIM}}
_mount = {"name": "wta-home", "mount_path": HOME_MOUNT}

executor = k8s_job_executor.configured({
    "max_concurrent": 4,
    "volumes": [_volume],
    "volume_mounts": [_mount],
    "env_vars": [f"WTA_HOME={HOME_MOUNT}", "WTA_PRESET", "WTA_DATASET"],
})


class GpuPodPipesClient(PipesK8sClient):
    """Starts the training child in a pod with one NVIDIA GPU and the shared home volume."""

    def run(self, *, context, extras=None, command=None, env=None, **kwargs):  # noqa: D102
        return super().run(
            context=context,
            extras=extras,
            image=TRAINING_IMAGE,
            command=list(command or ["python", "-m", "wta_dagster.pipes_train"]),
            env={key: value for key, value in (env or {}).items() if key.startswith("WTA_")}
            | {"WTA_HOME": HOME_MOUNT},
            base_pod_spec={
                "volumes": [_volume],
                "containers": [{"volume_mounts": [_mount], "resources": {"limits": {"nvidia.com/gpu": 1}}}],
            },
        )


defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    executor=executor,
    resources={
        "settings": WtaSettings(home=HOME_MOUNT),
        "training": TrainingResource(device="cuda", launcher="pipes", num_threads=1),
        "pipes_client": GpuPodPipesClient(),
    },
)
