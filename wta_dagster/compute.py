"""The training resource: which device trains, and whether training runs in a Pipes process."""

import os
import sys
import time

import dagster as dg
from pydantic import Field

from wta_core.devices import pick_device
from wta_dagster.resources import WtaSettings

PROGRESS_EVERY_S = 10.0


class TrainingResource(dg.ConfigurableResource):
    """Device, threads and launcher of every training.

    `launcher="in_process"` trains inside the step's process. `launcher="pipes"` starts
    `python -m wta_dagster.pipes_train` through `pipes_client`, so a deployment can swap in
    a Pipes client that starts a GPU pod or job (for example dagster-k8s's
    `PipesK8sClient`) without changing the asset.
    """

    device: str = Field(default="auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    dtype: str = Field(default="float32", description="training dtype; float32 keeps CPU runs bit-reproducible")
    num_threads: int = Field(default=0, description="torch CPU threads; 0 keeps torch's default")
    launcher: str = Field(default="in_process", description="in_process or pipes")

    def resolved_device(self) -> str:
        return pick_device(self.device)

    def threads(self) -> int | None:
        return self.num_threads or None

    def parallel_workers(self) -> int:
        """Trainings to run at once: the CPU cores over the threads per training, or 1 on an accelerator.

        One accelerator is shared by every worker, so more than one training at a time would
        only split its memory.
        """
        if self.resolved_device() != "cpu":
            return 1
        return max(1, (os.cpu_count() or 1) // (self.threads() or 1))

    def environment(self) -> dict[str, str]:
        return {"WTA_DEVICE": self.device, "WTA_NUM_THREADS": str(self.num_threads)}


def progress_logger(context: dg.AssetExecutionContext, label: str, total: int):
    """A progress callback that logs at most every `PROGRESS_EVERY_S` seconds and at the end."""
    last = [0.0]

    def report(step: int, loss: float, steps_per_second: float) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or step == total:
            last[0] = now
            context.log.info(f"{label}: step {step}/{total}, loss {loss:.4f}, {steps_per_second:.2f} steps/s")

    return report


def run_training_in_pipes(context: dg.AssetExecutionContext, client: dg.PipesSubprocessClient,
                          settings: WtaSettings, training: TrainingResource, subset_id: str) -> dict:
    """Train one subset's adapter in a child process that reports back through Dagster Pipes."""
    env = dict(os.environ) | training.environment() | {
        "WTA_HOME": str(settings.paths().home), "WTA_DATASET": settings.dataset_name(),
        "WTA_PRESET": settings.preset_name()}
    invocation = client.run(
        context=context,
        command=[sys.executable, "-m", "wta_dagster.pipes_train"],
        extras={"subset_id": subset_id, "config": settings.run_config().to_dict()},
        env=env,
    )
    results = invocation.get_results()
    if not results:
        raise dg.Failure(f"the training process for {subset_id!r} reported no result; see its log above")
    return {key: value.value for key, value in results[0].metadata.items()}
