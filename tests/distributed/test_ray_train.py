"""Ray Train runs end to end (Ray on 127.0.0.1; CI runs this inside `unshare -n`).

One Ray instance for the module. Runs: an uninterrupted 2-worker NML mini-batch run; the same run
with one worker SIGKILLed from outside by its pid (it must finish from the last checkpoint with the
uninterrupted run's exact numbers); a job whose driver process is killed and that is started again
with the same run name, after its newest checkpoint was damaged (resumes from the previous one,
says so, loses and repeats no epoch); and the single-process loop on the same config (accuracy band).
Then the one-line failures: workers the machine or the cluster cannot hold (exit 2), a rank that
exits (exit 1, naming it), a bad-input error only the workers find (never retried), and the quiet
console of a 2-worker run (Ray's lines in the run's ``ray.log``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from distgcl.checkpoint import CheckpointManager  # noqa: E402
from distgcl.config import ConfigError, load_config  # noqa: E402
from distgcl.distributed.trainer import (  # noqa: E402
    FATAL_FILE, HEALTH_CHECK_ENV, RAY_LOG, InfeasibleRequest, check_resources, train_distributed)
from killing import kill_rank_after_checkpoint, wait_for  # noqa: E402
from distgcl.train import FAIL_AT_ENV, NAN_AT_ENV, STEP_DELAY_ENV, run_training  # noqa: E402,E501

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds any single run may take here
NML = ["method=nml", "model.proj_dim=0", "model.out_dim=16", "model.hidden_dim=16",
       "model.activation=rrelu", "model.activate_last=false", "nml.mode=minibatch",
       "nml.batch_size=50", "nml.num_negatives=40", "nml.num_neighbors=[5,5]",
       "nml.inner_steps=2", "data.csbm.num_nodes=600", "data.csbm.num_features=16",
       "data.csbm.num_classes=4", "train.epochs=4", "train.lr=0.005", "train.threads=1",
       "train.progress=false", "eval.probe_seeds=3", "eval.probe_epochs=200",
       "eval.clustering_runs=1", "dist.checkpoint_every=4", "dist.max_failures=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.25")
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             _node_ip_address="127.0.0.1", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _config(storage: Path, name: str, *extra: str):
    return load_config(None, [*NML, "dist.num_workers=2", f"dist.storage_path={storage}",
                              f"dist.run_name={name}", *extra])


def _epochs(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    storage = tmp_path_factory.mktemp("storage")
    result = train_distributed(_config(storage, "clean"))
    return result, _epochs(storage / "clean")


def test_two_workers_record_layout_and_match_one_process_band(uninterrupted, tmp_path) -> None:
    result, epochs = uninterrupted
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert len(result["memory"]["workers_peak_rss_mb"]) == 2
    assert result["memory"]["driver_peak_rss_mb"] > 0
    rates = result["throughput"]["anchors_per_second_per_rank"]
    assert len(rates) == 2 and all(r > 0 for r in rates)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]
    # 600 anchors per epoch: each rank takes 300, in 6 steps of 50
    assert all(e["anchors"] == 600 for e in epochs) and result["timing"]["steps_per_epoch"] == 6
    # the embeddings and the encoder are written once, by rank 0, into the run directory
    run_dir = Path(result["run_dir"])
    z = torch.load(run_dir / "embeddings.pt")
    assert z.shape == (600, 16) and z.dtype == torch.float32
    assert result["outputs"]["embeddings"] == ["embeddings.pt"]
    assert sorted(p.name for p in run_dir.glob("embeddings*")) == ["embeddings.pt"]
    single = run_training(load_config(None, NML), tmp_path / "single")
    gap = abs(single["metrics"]["accuracy_mean"] - result["metrics"]["accuracy_mean"])
    assert gap < 5.0, (single["metrics"]["accuracy_mean"], result["metrics"]["accuracy_mean"])


def test_worker_killed_by_pid_resumes_with_identical_numbers(uninterrupted, tmp_path) -> None:
    _, clean_epochs = uninterrupted
    run_dir = tmp_path / "killed"
    with kill_rank_after_checkpoint(run_dir, rank=1, step=8, timeout=TIMEOUT):
        result = train_distributed(_config(tmp_path, "killed"))
    epochs = _epochs(run_dir)
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]  # each epoch exactly once
    for got, want in zip(epochs, clean_epochs):
        assert got["loss"] == want["loss"] and got["loss_nmn"] == want["loss_nmn"]
    assert result["metrics"]["accuracy_mean"] == uninterrupted[0]["metrics"]["accuracy_mean"]


def test_killed_job_restarts_by_run_name_past_a_damaged_checkpoint(ray_cluster, tmp_path) -> None:
    cmd = [sys.executable, "-m", "distgcl.cli", "train", str(REPO / "configs/quickstart.yaml"),
           "--num-workers", "2", "--run-name", "job", "--storage", str(tmp_path)]
    for item in NML:
        cmd += ["--set", item]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster, STEP_DELAY_ENV: "0.1"}
    run_dir = tmp_path / "job"
    first = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: 16 in CheckpointManager(run_dir).steps(), TIMEOUT,
                  "the step-16 checkpoint")
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the whole job: driver and its children
        first.wait(timeout=30)
    wait_for(lambda: not (run_dir / "result.json").exists() and _no_workers(run_dir), 60,
              "the killed job's workers to exit")
    entries = CheckpointManager(run_dir).entries()
    assert entries[-1][0] >= 16 and len(entries) >= 2
    newest = entries[-1][1] / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    env.pop(STEP_DELAY_ENV)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    logs = again.stdout + again.stderr
    assert entries[-1][1].name in logs and f"resuming from {entries[-2][1].name}" in logs
    assert [e["epoch"] for e in _epochs(run_dir)] == [1, 2, 3, 4]  # none lost, none repeated
    assert json.loads((run_dir / "result.json").read_text())["epochs_run"] == 4


def _no_workers(run_dir: Path) -> bool:
    for pid_file in (run_dir / "workers").glob("rank-*.pid"):
        try:
            os.kill(int(pid_file.read_text()), 0)
            return False
        except ProcessLookupError:
            continue
    return True


def _cli(tmp_path: Path, name: str, *args: str, env: dict | None = None,
         config: str = "configs/quickstart.yaml") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "distgcl.cli", "train", str(REPO / config), "--run-name", name,
           "--storage", str(tmp_path), *args]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=TIMEOUT)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "distgcl: error" in line]


def test_workers_the_local_ray_cannot_hold_fail_at_once_in_one_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # distgcl's own Ray
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distgcl.cli", "train",
                           str(REPO / "configs/quickstart.yaml"), "--num-workers", "64",
                           "--storage", str(tmp_path), "--run-name", "w64"],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.monotonic() - start < 120
    errors = _error_lines(proc)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "64 workers x 1 CPU each need 64 CPUs, but the local Ray (this machine) has" \
        in errors[0]
    assert not (tmp_path / "w64" / "workers").exists()  # no worker ever started
    with pytest.raises(InfeasibleRequest, match=r"^1 worker x 1 CPU \+ 1 GPU each needs 1 CPU "
                       "and 1 GPU, but here has 8 CPUs and 0 GPUs: lower --num-workers or drop "
                       "--use-gpu$"):
        check_resources(1, 1, True, {"CPU": 8.0}, "here")


def test_workers_a_cluster_does_not_start_fail_after_the_startup_timeout(ray_cluster,
                                                                        tmp_path) -> None:
    start = time.monotonic()
    proc = _cli(tmp_path, "w64", "--num-workers", "64", "--set", "dist.startup_timeout_s=3",
                env={"RAY_ADDRESS": ray_cluster})
    assert proc.returncode == 2, proc.stderr[-3000:]
    # one 3 s timeout, not retried (Ray's default would be 60 s, then retried without end)
    assert time.monotonic() - start < 75
    errors = _error_lines(proc)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "64 workers x 1 CPU each need 64 CPUs: the Ray cluster did not start them within " \
        "3 s (dist.startup_timeout_s); it has 2 CPUs" in errors[0]


def test_a_rank_that_exits_is_named_in_one_line(ray_cluster, tmp_path) -> None:
    args = ["--num-workers", "2"]
    for item in [*NML, "dist.max_failures=0"]:
        args += ["--set", item]
    proc = _cli(tmp_path, "fail", *args, env={"RAY_ADDRESS": ray_cluster, FAIL_AT_ENV: "1:1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "distributed training failed: rank 1: " in errors[0] and "Traceback" not in \
        proc.stderr, proc.stderr[-3000:]


def test_a_nan_on_one_rank_stops_every_rank_once_without_retries(ray_cluster, tmp_path) -> None:
    """NaN parameters on rank 1 only (mini-batch: the ranks' losses differ): the finite flag is
    all-reduced before backward, so both ranks stop at step 3; not retried (max_failures=2)."""
    args = ["--num-workers", "2"]
    for item in NML:
        args += ["--set", item]
    proc = _cli(tmp_path, "nan", *args, env={"RAY_ADDRESS": ray_cluster, NAN_AT_ENV: "1:3"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "training diverged" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (tmp_path / "nan" / "last_good.pt").is_file()
    # one attempt only: the injection prints once per start of rank 1's worker
    assert (proc.stdout + proc.stderr).count(f"{NAN_AT_ENV}: parameters set to NaN") == 1


def test_a_bad_input_error_a_worker_finds_is_not_retried(tmp_path) -> None:
    # data.path is read by the workers only; three retries would end in DistributedTrainingFailed
    config = _config(tmp_path, "bad", "data.name=file", f"data.path={tmp_path / 'nope.pt'}",
                     "dist.max_failures=3")
    with pytest.raises(ConfigError, match="nope.pt") as info:
        train_distributed(config)
    assert "\n" not in str(info.value)
    assert (tmp_path / "bad" / FATAL_FILE).exists()


def test_quiet_console_ray_lines_in_the_run_log(ray_cluster, tmp_path) -> None:
    args = ["--num-workers", "2"]
    for item in ["data.csbm.num_nodes=300", "train.epochs=3", "train.progress=true",
                 "eval.probe_seeds=2", "eval.probe_epochs=50", "eval.clustering_runs=1"]:
        args += ["--set", item]
    proc = _cli(tmp_path, "quiet", *args, env={"RAY_ADDRESS": ray_cluster})
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "Reporting training result" not in console, console[-3000:]
    assert "Checkpoint successfully created" not in console
    assert "Started training worker group" not in console  # the controller's lines
    assert "Setting up process group" not in console  # every worker's, once per rank
    from_workers = [line for line in console.splitlines() if line.startswith("(RayTrainWorker")]
    assert all("distgcl" in line or "%|" in line for line in from_workers), from_workers
    assert sum("3/3" in line for line in console.splitlines()) == 1, console  # one bar
    assert "linear-probe accuracy" in proc.stdout
    log = (tmp_path / "quiet" / RAY_LOG).read_text()
    assert "Reporting training result" in log and "Started training worker group" in log
    assert "Setting up process group" in log
