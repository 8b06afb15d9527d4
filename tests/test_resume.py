"""Killing a training run and materialising its partition again resumes from the checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from peft import PeftModel

from tests.pipeline_fixtures import subprocess_env
from wta_core.model import load_base_model
from wta_core.storage import TableStore

PARTITION = "chorale"


def materialize_command() -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "asset", "materialize", "-m", "wta_dagster", "--select", "lora_adapters",
            "--partition", PARTITION]


def run_to_end(env: dict[str, str]) -> str:
    completed = subprocess.run(materialize_command(), env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout + completed.stderr


def kill_after_first_checkpoint(env: dict[str, str], checkpoints: Path) -> bool:
    """Start a materialisation and SIGKILL its whole process group once a checkpoint exists."""
    process = subprocess.Popen(materialize_command(), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoints.exists() and any(p.suffix == ".safetensors" for p in checkpoints.iterdir()):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                return True
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    return False


def test_killed_training_resumes(tmp_path, render_cache):
    home = tmp_path / "home"
    env = subprocess_env(home, render_cache)
    checkpoints = home / "checkpoints" / PARTITION
    adapter = home / "adapters" / PARTITION

    assert kill_after_first_checkpoint(env, checkpoints), "training finished before a checkpoint was seen"
    assert not (adapter / "adapter_model.safetensors").exists()

    log = run_to_end(env)
    assert f"resumed {PARTITION!r} from its checkpoint at step" in log
    resumed_sha = TableStore(home / "wta.duckdb").read_table("adapters", {"adapter_id": PARTITION})["sha256"][0]
    model = PeftModel.from_pretrained(load_base_model(home / "base_model"), str(adapter))
    assert any("lora_" in name for name, _ in model.named_parameters())

    # The same partition trained without interruption gives the same bytes.
    subprocess.run(["rm", "-rf", str(adapter), str(checkpoints)], check=True)
    run_to_end(env)
    fresh_sha = TableStore(home / "wta.duckdb").read_table("adapters", {"adapter_id": PARTITION})["sha256"][0]
    assert fresh_sha == resumed_sha
