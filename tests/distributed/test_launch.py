"""launch/submit.py end to end: a local Ray head started here (127.0.0.1), a tiny job through
``ray job submit`` that leaves its result.json in the storage path; the head is stopped after."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# as in an activated venv: this interpreter's bin/ (ray, python) first on PATH, for the
# launcher, the head and the job's entrypoint (`python -m distgcl.cli`, run by the head)
VENV_ENV = {**os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def head():
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="/tmp/rayh")  # short: Ray's socket paths have a length limit
    port, dashboard = _free_port(), _free_port()
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}",
         f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=true"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=VENV_ENV)
    try:
        end = time.monotonic() + 120
        while not _listening(dashboard):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("the Ray head did not start")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its processes on TERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def test_dry_run_prints_the_exact_command(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "launch/submit.py"), "configs/quickstart.yaml",
                          "--address", "http://127.0.0.1:1", "--num-workers", "2", "--run-name",
                          "x", "--storage", str(tmp_path), "--dry-run"],
                         capture_output=True, text=True, cwd=REPO, timeout=60, env=VENV_ENV)
    assert out.returncode == 0
    line = out.stdout.strip()
    assert line.startswith("+ ray job submit --address http://127.0.0.1:1 --submission-id")
    assert "-- python -m distgcl.cli train configs/quickstart.yaml --num-workers 2" in line
    env = json.loads(line.split("--runtime-env-json ")[1].split(" --")[0].strip("'"))
    assert env["working_dir"] == str(REPO) and ".git" in env["excludes"]
    assert ".ci-venv" in env["excludes"] and ".venv" in env["excludes"]


def test_job_submit_end_to_end(head: str, tmp_path: Path) -> None:
    overrides = ["data.csbm.num_nodes=300", "data.csbm.num_features=16", "model.out_dim=16",
                 "model.proj_dim=16", "train.epochs=3", "train.threads=1", "eval.probe_seeds=2",
                 "eval.probe_epochs=100", "eval.clustering_runs=1"]
    cmd = [sys.executable, str(REPO / "launch/submit.py"), "configs/quickstart.yaml",
           "--address", head, "--num-workers", "2", "--run-name", "submitted",
           "--storage", str(tmp_path)]
    for item in overrides:
        cmd += ["--set", item]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**VENV_ENV, "RAY_AUTH_MODE": "token"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    result = json.loads((tmp_path / "submitted" / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs_run"] == 3
    assert 0 <= result["metrics"]["accuracy_mean"] <= 100
