"""The Kubernetes deployment example loads with the same assets as the local code location."""

from __future__ import annotations

from wta_dagster.definitions import defs as local_defs
from wta_dagster.deploy.kubernetes import GpuPodPipesClient, defs


def asset_names(definitions) -> set[str]:
    return {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}


def test_kubernetes_example_loads():
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "k8s"
    assert asset_names(defs) == asset_names(local_defs)


def test_kubernetes_training_uses_gpu_pods():
    resources = defs.resources
    assert isinstance(resources["pipes_client"], GpuPodPipesClient)
    assert resources["training"].launcher == "pipes"
    assert resources["training"].device == "cuda"
