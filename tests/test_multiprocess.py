"""Two local processes (2 CPU devices each, gloo collectives) run ``jaxprobe extract`` as one job and write the
store a single process writes: each process feeds only its own rows, params are sharded over both processes'
devices, and process 0 alone writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from jaxprobe.features import FeatureStore

OVERRIDES = ["capture.resolution=32", "capture.chunk_rows=16", "capture.batch_size=6", "mesh.model=2",
             "capture.sites=('vision.layer_01', 'connector.output', 'llm.*.last_token')",
             "capture.generate.max_new_tokens=4", "model.cache=False"]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "jaxprobe.cli", "extract", "demo",
            *[arg for o in [*OVERRIDES, f"workdir={workdir}"] for arg in ("--set", o)]]


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAXPROBE_DISTRIBUTED_TIMEOUT="60", PYTHONPATH=str(Path(__file__).resolve().parents[1]), **extra)
    return env


def test_two_processes_write_the_single_process_store(tmp_path):
    shared = tmp_path / "two"
    port = _free_port()
    workers = [subprocess.Popen(_command(shared), env=_env(2, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                                          JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(rank)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for rank in range(2)]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=TIMEOUT)[0])
    finally:
        for worker in workers:
            worker.kill()
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    single = subprocess.run(_command(tmp_path / "one"), env=_env(4), capture_output=True, text=True, timeout=TIMEOUT)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    two, one = FeatureStore.open(shared / "features"), FeatureStore.open(tmp_path / "one" / "features")
    assert two.sites == one.sites
    for site in one.sites:
        np.testing.assert_allclose(two.load(site), one.load(site), atol=1e-6, err_msg=site)
    columns = ["id", "label", "split", "group", "answer_pred", "generated_text", "generated_pred"]
    pd.testing.assert_frame_equal(two.index[columns], one.index[columns])
    manifest = json.loads((shared / "manifest.json").read_text())
    assert manifest["stages"]["extract"]["processes"] == 2
