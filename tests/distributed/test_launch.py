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


def _start_head(home: Path) -> tuple[subprocess.Popen, str, str]:
    """``ray start --head`` with ``HOME=home``: Ray turns token authentication on exactly when
    ``home/.ray/auth_token`` exists, so the caller picks the head's kind by what it puts there."""
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="/tmp/rayh")  # short: Ray's socket paths have a length limit
    port, dashboard = _free_port(), _free_port()
    env = {**_fresh_env(home)}
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}",
         f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         "--node-ip-address=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=true",
         # every agent port chosen here: two heads of this module run side by side, and Ray's
         # defaults (e.g. the agent's 52365) would collide ("No available agent to submit job")
         *(f"--{flag}={_free_port()}" for flag in (
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
             "object-manager-port"))],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    end = time.monotonic() + 120
    while not _listening(dashboard):
        if proc.poll() is not None or time.monotonic() > end:
            _stop_head(proc, temp)
            raise RuntimeError("the Ray head did not start")
        time.sleep(0.5)
    address = f"http://127.0.0.1:{dashboard}"
    _wait_for_job_agent(ray_bin, address, env, proc, temp)
    return proc, address, temp


def _wait_for_job_agent(ray_bin: str, address: str, env: dict[str, str],
                        proc: subprocess.Popen, temp: str) -> None:
    """The dashboard listens before the node's job agent registers ("No available agent to
    submit job"): submit a no-op job until one is accepted."""
    if (Path(env["HOME"]) / ".ray" / "auth_token").exists():
        env = {**env, "RAY_AUTH_MODE": "token"}
    end = time.monotonic() + 120
    while True:
        out = subprocess.run([ray_bin, "job", "submit", "--address", address, "--", "true"],
                             env=env, capture_output=True, text=True, timeout=120)
        if out.returncode == 0:
            return
        if "No available agent" not in out.stdout + out.stderr or time.monotonic() > end:
            _stop_head(proc, temp)
            raise RuntimeError(f"the Ray head takes no job: {(out.stdout + out.stderr)[-2000:]}")
        time.sleep(1)


def _stop_head(proc: subprocess.Popen, temp: str) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its processes on TERM
    try:
        # it rarely finishes within a minute (the CI's durations: 60 s, then the KILL): 10 s,
        # then the KILL of the whole session, as before
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def _fresh_env(home: Path) -> dict[str, str]:
    """The venv's environment with ``HOME`` replaced and no Ray auth variable inherited."""
    env = {k: v for k, v in VENV_ENV.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    env["HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head as on a fresh machine: empty ``HOME``, so no token authentication."""
    home = tmp_path_factory.mktemp("plain-home")
    proc, address, temp = _start_head(home)
    try:
        yield address
    finally:
        _stop_head(proc, temp)


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    """A head with token authentication (its ``HOME`` holds ``.ray/auth_token``); yields the
    address and the token file."""
    home = tmp_path_factory.mktemp("token-home")
    ray_bin = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_bin, "get-auth-token", "--generate"], env=_fresh_env(home),
                   capture_output=True, check=True, timeout=60)
    token_file = home / ".ray" / "auth_token"
    assert token_file.is_file()
    proc, address, temp = _start_head(home)
    try:
        yield address, token_file
    finally:
        _stop_head(proc, temp)


def _auth_mode(address: str) -> str:
    sys.path.insert(0, str(REPO / "launch"))
    try:
        import submit
    finally:
        sys.path.pop(0)
    return submit.cluster_auth_mode(address)


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


def _submit(address: str, storage: Path, run_name: str, env: dict[str, str],
            workers: int = 2, epochs: int = 3) -> subprocess.CompletedProcess:
    overrides = ["data.csbm.num_nodes=300", "data.csbm.num_features=16", "model.out_dim=16",
                 "model.proj_dim=16", f"train.epochs={epochs}", "train.threads=1",
                 "eval.probe_seeds=2",
                 "eval.probe_epochs=100", "eval.clustering_runs=1"]
    cmd = [sys.executable, str(REPO / "launch/submit.py"), "configs/quickstart.yaml",
           "--address", address, "--num-workers", str(workers), "--run-name", run_name,
           "--storage", str(storage)]
    for item in overrides:
        cmd += ["--set", item]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)


def test_job_submit_end_to_end(head: str, tmp_path: Path) -> None:
    """A fresh machine: empty HOME on head and client. The client's shell still has the
    ``RAY_AUTH_MODE=token`` older instructions told users to set: it must not break a plain head."""
    assert _auth_mode(head) == "disabled"
    home = tmp_path / "client-home"
    home.mkdir()
    out = _submit(head, tmp_path / "runs", "submitted",
                  {**_fresh_env(home), "RAY_AUTH_MODE": "token"})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    result = json.loads((tmp_path / "runs" / "submitted" / "result.json").read_text())
    assert result["world_size"] == 2 and result["epochs_run"] == 3
    # a probe that learned something: csbm's two classes are well above chance (50 %)
    assert result["metrics"]["accuracy_mean"] > 70


def test_token_cluster_without_a_token_is_one_line(token_head, tmp_path: Path) -> None:
    address, _ = token_head
    assert _auth_mode(address) == "token"
    home = tmp_path / "client-home"
    home.mkdir()
    out = _submit(address, tmp_path / "runs", "no-token", _fresh_env(home))
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "token authentication" in errors[0]
    assert "ray get-auth-token" in errors[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "no-token").exists()


def test_token_cluster_with_the_token_path(token_head, tmp_path: Path) -> None:
    address, token_file = token_head
    home = tmp_path / "client-home"
    home.mkdir()
    env = {**_fresh_env(home), "RAY_AUTH_TOKEN_PATH": str(token_file)}
    out = _submit(address, tmp_path / "runs", "with-token", env, workers=1, epochs=1)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    result = json.loads((tmp_path / "runs" / "with-token" / "result.json").read_text())
    assert result["epochs_run"] == 1
