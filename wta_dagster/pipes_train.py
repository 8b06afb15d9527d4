"""Child process of the Pipes launcher: trains one adapter and reports through Dagster Pipes.

It imports only `dagster_pipes` (not Dagster), so the same command runs in a GPU pod.
"""

import os
import time

from dagster_pipes import open_dagster_pipes

from wta_core.config import RunConfig
from wta_core.devices import pick_device
from wta_core.paths import WtaPaths, resolve_home
from wta_core.pipeline.adapters import train_subset_adapter


def main() -> None:
    with open_dagster_pipes() as pipes:
        subset_id = pipes.get_extra("subset_id")
        # The parent sends its whole config, so the child trains with exactly the same values.
        config = RunConfig.from_dict(pipes.get_extra("config"))
        paths = WtaPaths(resolve_home())
        threads = int(os.environ.get("WTA_NUM_THREADS", "0")) or None
        last = [0.0]

        def progress(step: int, loss: float, steps_per_second: float) -> None:
            now = time.monotonic()
            if now - last[0] >= 10.0 or step == config.lora.steps:
                last[0] = now
                pipes.log.info(f"{subset_id}: step {step}/{config.lora.steps}, loss {loss:.4f}, "
                               f"{steps_per_second:.2f} steps/s")

        result = train_subset_adapter(paths, config, os.environ.get("WTA_DATASET", "embedded"), subset_id,
                                      device=pick_device(os.environ.get("WTA_DEVICE", "auto")), num_threads=threads,
                                      progress=progress)
        pipes.report_asset_materialization(metadata={
            "final_loss": result.final_loss, "steps": result.steps, "seconds": result.seconds,
            "sha256": result.sha256, "device": result.device, "resumed_from_step": result.resumed_from_step,
            "members": result.members, "adapter_folder": result.adapter_folder,
            "losses": {"raw_value": [float(x) for x in result.losses], "type": "json"},
        })


if __name__ == "__main__":
    main()
