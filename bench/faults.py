"""Fault injection against the real CLI: one row per fault in ``bench/results/faults.json``.

Every row drives ``distgcl train ... --num-workers N`` in its own process (its own session, so a
whole job can be killed as a process group) and kills real processes by pid:

* ``worker_killed``: Ray Train rank 1 SIGKILLed (pid from ``workers/rank-1.pid``) after the
  step-8 checkpoint; must finish with the clean run's numbers.
* ``job_killed``: the whole ``distgcl train`` process group SIGKILLed after the step-16
  checkpoint, then the same command again (same run name and storage); must resume and finish
  with the clean run's numbers.
* ``truncated_checkpoint``: as ``job_killed``, and the newest checkpoint's ``state.pt`` cut in
  half before the rerun; must name the damaged checkpoint, resume from the one before, and finish
  with the clean run's numbers.
* ``shard_killed``: E2Neg with ``dist.shards=2``: one ``GraphShard`` actor SIGKILLed while the
  spectral step runs (its pid found by its process title); must finish with the clean sharded
  run's numbers.
* ``nan_one_rank``: ``DISTGCL_NAN_AT=1:3`` (rank 1's parameters NaN before step 3): one clear
  ``training diverged`` line, exit 1, no retries.
* ``too_many_workers``: ``--num-workers 2 x CPUs`` on a local Ray: one clear line, exit 2.

The clean runs (NML mini-batch on a 600-node CSBM graph; E2Neg on Cora, sharded) run once each.
All rows but ``too_many_workers`` (which needs distgcl's own local Ray) join one Ray head this
script starts on 127.0.0.1 (``RAY_ADDRESS``), as a cluster user would. Run inside
``unshare -n sh -c 'ip link set lo up && python bench/faults.py'``.

Row fields: ``fault``, ``outcome`` (``completed`` / ``clear_error`` / ``failed``), ``expected``,
``seconds_to_outcome`` (from the fault to the process's exit), ``metrics_identical_to_clean``
(per-epoch losses and final quality metrics equal; where a run completes), ``console_lines``,
``traceback_on_console``, ``goal_met`` (expected outcome within 120 s, identical metrics, no
traceback), ``contended``, ``load_before``, ``load_after``, ``command``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, command_line, machine_info  # noqa: E402

GOAL_S = 120.0
TIMEOUT_S = 600.0  # any one process
NML = ["method=nml", "model.proj_dim=0", "model.out_dim=16", "model.hidden_dim=16",
       "model.activation=rrelu", "model.activate_last=false", "nml.mode=minibatch",
       "nml.batch_size=50", "nml.num_negatives=40", "nml.num_neighbors=[5,5]",
       "nml.inner_steps=2", "data.csbm.num_nodes=600", "data.csbm.num_features=16",
       "data.csbm.num_classes=4", "train.epochs=4", "train.lr=0.005", "train.threads=1",
       "train.progress=false", "eval.probe_seeds=3", "eval.probe_epochs=200",
       "eval.clustering_runs=1", "dist.checkpoint_every=4", "dist.max_failures=2"]
E2NEG_SHARDS = ["model.out_dim=64", "model.proj_dim=32", "train.epochs=3", "train.threads=1",
                "train.progress=false", "e2neg.solver=lobpcg-block", "e2neg.tol=1e-6",
                "e2neg.cache=false", "dist.shards=2", "eval.probe_seeds=2",
                "eval.clustering_runs=1", "dist.max_failures=2"]
QUALITY = ("accuracy_mean", "accuracy_std", "rocauc_mean", "nmi", "ari", "fmi")
FAULTS = ("worker_killed", "job_killed", "truncated_checkpoint", "shard_killed", "nan_one_rank",
          "too_many_workers")


# ------------------------------------------------------------------------------ load fields

def load_now() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


OWN_LOAD = 2.0
"""The 1-minute load a row's own runs put on this 2-core machine (two Ray Train workers)."""


def load_fields() -> dict[str, Any]:
    """``contended`` / ``load_before`` / ``load_after`` (bench-results.md): ``load_before`` from
    ``../shared/tools/quiet``'s ``DISTGCL_BENCH_LOAD_BEFORE``; contended when it is missing or
    >= 0.5, or when the load after exceeds the row's own (its 2-worker runs keep both cores
    busy: about 2) by 0.5, i.e. something else ran beside it."""
    raw = os.environ.get("DISTGCL_BENCH_LOAD_BEFORE")
    before = float(raw) if raw else None
    after = load_now()
    contended = before is None or before >= 0.5 or after >= OWN_LOAD + 0.5
    return {"contended": contended, "load_before": before, "load_after": after}


# ----------------------------------------------------------------------------- CLI processes

class Cli:
    """One ``distgcl train`` process in its own session; its console (stdout + stderr) is read
    line by line with the time each line arrived."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.cmd = [sys.executable, "-m", "distgcl.cli", "train", *args]
        self.lines: list[tuple[float, str]] = []
        self.end: float | None = None
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = TIMEOUT_S, watch: Any = None) -> int:
        """The exit code; ``watch`` (a function) runs on a thread meanwhile, joined after."""
        watcher = threading.Thread(target=watch, daemon=True) if watch is not None else None
        if watcher is not None:
            watcher.start()
        try:
            return self._wait(timeout)
        finally:
            if watcher is not None:
                watcher.join(timeout=5)

    def _wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            rc = self.proc.wait(timeout=30)
        self.end = time.monotonic()
        self._reader.join(timeout=10)
        return rc

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def text(self) -> list[str]:
        return [line for _, line in self.lines]

    def first_line_time(self, needle: str) -> float | None:
        return next((t for t, line in self.lines if needle in line), None)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             proc: Cli | None = None) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"the run ended (exit {proc.proc.returncode}) before {what}:\n"
                               + "\n".join(proc.text()[-20:]))
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def checkpoint_steps(run_dir: Path) -> list[int]:
    from distgcl.checkpoint import CheckpointManager

    return CheckpointManager(run_dir).steps() if run_dir.is_dir() else []


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def no_workers(run_dir: Path) -> bool:
    return not any(alive(int(p.read_text())) for p in (run_dir / "workers").glob("rank-*.pid"))


def in_solve(before: set[int], first: dict[str, float]) -> bool:
    """Both shard actors are up and one is seen in a solver call (its title
    ``ray::GraphShardServer.METHOD``, not ``__init__``/``info``), or both have been up for 3 s
    (a call can fall between two polls); ``first`` keeps when both were first seen."""
    import psutil

    pids = set(shard_pids()) - before
    if len(pids) < 2:
        return False
    first.setdefault("t", time.monotonic())
    for pid in pids:
        try:
            title = psutil.Process(pid).cmdline()[0]
        except (psutil.Error, IndexError):
            continue
        method = title.partition(".")[2]
        if method and method not in ("__init__", "info"):
            return True
    return time.monotonic() - first["t"] > 3.0


def shard_pids() -> list[int]:
    """Pids of the live ``GraphShard`` actor processes of this script's Ray (descendants of this
    process: other sessions' actors on the same machine are never touched). Ray titles an actor
    process ``ray::GraphShardServer`` (idle) or ``ray::GraphShardServer.METHOD`` (in a call)."""
    import psutil

    pids = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if cmd.startswith("ray::GraphShard") and alive(proc.pid):
            pids.append(proc.pid)
    return sorted(pids)


# ------------------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, work: Path, ray_address: str | None) -> None:
        self.work = work
        self.ray_address = ray_address
        self.clean: dict[str, dict[str, Any]] = {}
        data = os.environ.get("DISTGCL_TEST_DATA") or str(REPO.parent / "shared" / "data")
        self.base_env = {**os.environ, "DISTGCL_DATA": data,
                         "DISTGCL_CACHE": str(work / "cache")}

    def env(self, ray: bool = True, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if k != "RAY_ADDRESS"}
        if ray and self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        env.update(extra)
        return env

    def args(self, kind: str, name: str) -> list[str]:
        if kind == "nml":
            config, sets, workers = "configs/quickstart.yaml", NML, 2
        else:
            config, sets, workers = "configs/cora_e2neg.yaml", E2NEG_SHARDS, 1
        out = [str(REPO / config), "--num-workers", str(workers), "--run-name", name,
               "--storage", str(self.work / "runs")]
        for item in sets:
            out += ["--set", item]
        return out

    def run_dir(self, name: str) -> Path:
        return self.work / "runs" / name

    def clean_run(self, kind: str) -> dict[str, Any]:
        """The uninterrupted run of ``kind`` (once per script run)."""
        if kind not in self.clean:
            name = f"clean-{kind}"
            cli = Cli(self.args(kind, name), self.env())
            rc = cli.wait()
            if rc != 0:
                raise RuntimeError(f"the clean {kind} run failed ({rc}):\n"
                                   + "\n".join(cli.text()[-30:]))
            self.clean[kind] = summary(self.run_dir(name))
        return self.clean[kind]


def summary(run_dir: Path) -> dict[str, Any]:
    """Per-epoch losses (every field but the times) and the final quality metrics of a run."""
    epochs = [{k: v for k, v in json.loads(line).items() if "second" not in k}
              for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "result.json").read_text())["metrics"]
    return {"epochs": epochs, "metrics": {k: metrics[k] for k in QUALITY if k in metrics}}


def restarts(run_dir: Path) -> int:
    """Worker-group restarts Ray Train logged for a run (its ``Error count: N`` lines)."""
    log = run_dir / "ray.log"
    return log.read_text(errors="replace").count("Error count:") if log.is_file() else 0


def make_row(fault: str, expected: str, cli: Cli, rc: int, fault_time: float | None,
             same: dict[str, Any], run_dir: Path | None = None,
             **extra: Any) -> dict[str, Any]:
    lines = cli.text()
    identical = same["identical"]
    errors = [line for line in lines if "distgcl: error" in line]
    traceback = any("Traceback (most recent call last)" in line for line in lines)
    if rc == 0:
        outcome = "completed"
    elif rc in (1, 2) and len(errors) == 1 and not traceback:
        outcome = "clear_error"
    else:
        outcome = "failed"
    end = cli.end if cli.end is not None else time.monotonic()
    seconds = round(end - fault_time, 2) if fault_time is not None else None
    goal = (outcome == expected and seconds is not None and seconds <= GOAL_S
            and identical is not False and not traceback)
    row = {"fault": fault, "outcome": outcome, "expected": expected, "exit_code": rc,
           "seconds_to_outcome": seconds, "metrics_identical_to_clean": identical,
           "console_lines": len(lines), "traceback_on_console": traceback, "goal_met": goal}
    if "differences" in same:
        row["differences"] = same["differences"]
    if errors:
        row["error_line"] = errors[0]
    row["console_tail"] = lines[-4:]
    if run_dir is not None:
        row["worker_group_restarts"] = restarts(run_dir)
    row.update(extra)
    row.update(load_fields())
    row["command"] = " ".join(shlex.quote(a) for a in ["distgcl", *cli.cmd[3:]])
    return row


def differences(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Where a run's summary differs from the clean one (``epoch 2 loss: got vs clean``)."""
    out = []  # the training curve first: a probe-only difference shows as metrics alone
    if len(got["epochs"]) != len(want["epochs"]):
        out.append(f"epochs: {len(got['epochs'])} vs clean {len(want['epochs'])}")
    for g, w in zip(got["epochs"], want["epochs"]):
        out += [f"epoch {w.get('epoch')} {k}: {g.get(k)} vs clean {v}" for k, v in w.items()
                if g.get(k) != v]
    return out + [f"{k}: {got['metrics'].get(k)} vs clean {v}"
                  for k, v in want["metrics"].items() if got["metrics"].get(k) != v]


def compare(bench: Bench, kind: str, name: str, rc: int) -> dict[str, Any]:
    """``metrics_identical_to_clean`` (None when the run did not complete) and, when they
    differ, the first differences."""
    if rc != 0:
        return {"identical": None}
    diff = differences(summary(bench.run_dir(name)), bench.clean_run(kind))
    return {"identical": not diff, **({"differences": diff[:6]} if diff else {})}


def row_worker_killed(bench: Bench) -> dict[str, Any]:
    bench.clean_run("nml")
    name = "worker-killed"
    run_dir = bench.run_dir(name)
    pid_file = run_dir / "workers" / "rank-1.pid"
    cli = Cli(bench.args("nml", name), bench.env(DISTGCL_STEP_DELAY="0.15"))
    wait_for(lambda: 8 in checkpoint_steps(run_dir) and pid_file.exists(), TIMEOUT_S,
             "the step-8 checkpoint", cli)
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGKILL)
    fault_time = time.monotonic()
    rc = cli.wait()
    restarted = pid_file.exists() and int(pid_file.read_text()) != pid
    return make_row("worker_killed", "completed", cli, rc, fault_time,
                    compare(bench, "nml", name, rc), run_dir, killed_pid=pid,
                    resumed_at_step=resumed_at(run_dir),
                    worker_restarted=restarted)


def _kill_job_at_step_16(bench: Bench, name: str) -> tuple[list[str], float]:
    """Start the NML job, SIGKILL its whole process group after the step-16 checkpoint, wait
    for its workers to exit; return the console lines and the time of the kill."""
    run_dir = bench.run_dir(name)
    first = Cli(bench.args("nml", name), bench.env(DISTGCL_STEP_DELAY="0.1"))
    wait_for(lambda: 16 in checkpoint_steps(run_dir), TIMEOUT_S, "the step-16 checkpoint",
             first)
    first.kill_group()
    fault_time = time.monotonic()
    first.wait(timeout=30)
    wait_for(lambda: no_workers(run_dir), 60, "the killed job's workers to exit")
    return first.text(), fault_time


def resumed_at(run_dir: Path) -> int | None:
    """The first global step of the newest resume the ranks recorded (``resumes.jsonl``)."""
    path = run_dir / "resumes.jsonl"
    if not path.is_file() or not path.read_text().strip():
        return None
    return json.loads(path.read_text().splitlines()[-1]).get("first_step")


def row_job_killed(bench: Bench) -> dict[str, Any]:
    bench.clean_run("nml")
    name = "job-killed"
    first_lines, fault_time = _kill_job_at_step_16(bench, name)
    again = Cli(bench.args("nml", name), bench.env())
    rc = again.wait()
    return make_row("job_killed", "completed", again, rc, fault_time,
                    compare(bench, "nml", name, rc), bench.run_dir(name),
                    resumed_at_step=resumed_at(bench.run_dir(name)),
                    console_lines_before_kill=len(first_lines))


def row_truncated_checkpoint(bench: Bench) -> dict[str, Any]:
    from distgcl.checkpoint import CheckpointManager

    bench.clean_run("nml")
    name = "truncated"
    _kill_job_at_step_16(bench, name)
    entries = CheckpointManager(bench.run_dir(name)).entries()
    newest = entries[-1][1] / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    fault_time = time.monotonic()
    again = Cli(bench.args("nml", name), bench.env())
    rc = again.wait()
    text = again.text()
    named = any(entries[-1][1].name in line for line in text)
    resumed_prev = len(entries) >= 2 and any(f"resuming from {entries[-2][1].name}" in line
                                             for line in text)
    return make_row("truncated_checkpoint", "completed", again, rc, fault_time,
                    compare(bench, "nml", name, rc), bench.run_dir(name),
                    damaged_checkpoint_named=named,
                    resumed_at_step=resumed_at(bench.run_dir(name)),
                    resumed_from_previous=resumed_prev)


def row_shard_killed(bench: Bench) -> dict[str, Any]:
    import psutil

    bench.clean_run("e2neg")
    name = "shard-killed"
    before = set(shard_pids())  # none expected: the clean run's actors are gone
    cli = Cli(bench.args("e2neg", name), bench.env())
    first: dict[str, float] = {}
    wait_for(lambda: in_solve(before, first), TIMEOUT_S,
             "a shard actor serving the spectral step", cli)
    victim = sorted(set(shard_pids()) - before)[-1]
    try:
        title = psutil.Process(victim).cmdline()[0]  # ray::GraphShardServer[.METHOD]
    except (psutil.Error, IndexError):
        title = None
    os.kill(victim, signal.SIGKILL)
    fault_time = time.monotonic()
    restarted = {"pid": None}

    def watch() -> None:  # a new GraphShard pid while the run lives: the kill landed in the step
        while cli.proc.poll() is None:
            fresh = set(shard_pids()) - before - {victim}
            if len(fresh) >= 2:
                restarted["pid"] = max(fresh)
                return
            time.sleep(0.02)

    rc = cli.wait(watch=watch)
    return make_row("shard_killed", "completed", cli, rc, fault_time,
                    compare(bench, "e2neg", name, rc), bench.run_dir(name),
                    killed_pid=victim, killed_process_title=title,
                    shard_restarted=restarted["pid"] is not None)


def row_nan_one_rank(bench: Bench) -> dict[str, Any]:
    name = "nan"
    run_dir = bench.run_dir(name)
    cli = Cli(bench.args("nml", name), bench.env(DISTGCL_NAN_AT="1:3"))
    seen: dict[str, float] = {}

    def watch() -> None:  # the console line arrives late (Ray batches worker output): also
        while cli.proc.poll() is None and "t" not in seen:  # watch rank 0 reach step 2
            try:
                if json.loads((run_dir / "progress.json").read_text())["global_step"] >= 2:
                    seen["t"] = time.monotonic()
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)

    rc = cli.wait(watch=watch)
    times = [t for t in (seen.get("t"), cli.first_line_time(
        "DISTGCL_NAN_AT: parameters set to NaN")) if t is not None]
    fault_time = min(times) if times else None
    injections = sum("DISTGCL_NAN_AT: parameters set to NaN" in line for line in cli.text())
    row = make_row("nan_one_rank", "clear_error", cli, rc, fault_time, {"identical": None},
                   run_dir, injections=injections,
                   last_good_kept=(run_dir / "last_good.pt").is_file())
    if row["outcome"] == "clear_error" and "training diverged" not in row.get("error_line", ""):
        row["outcome"] = "failed"  # one line, but not the divergence
        row["goal_met"] = False
    return row


def row_too_many_workers(bench: Bench) -> dict[str, Any]:
    workers = 2 * (os.cpu_count() or 1)
    name = "too-many-workers"
    args = [str(REPO / "configs/quickstart.yaml"), "--num-workers", str(workers),
            "--run-name", name, "--storage", str(bench.work / "runs")]
    start = time.monotonic()  # the fault is the request itself
    cli = Cli(args, bench.env(ray=False))
    rc = cli.wait()
    started = (bench.run_dir(name) / "workers").exists()
    return make_row("too_many_workers", "clear_error", cli, rc, start, {"identical": None},
                    workers=workers, cpus=os.cpu_count(), a_worker_started=started)


ROWS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "worker_killed": row_worker_killed, "job_killed": row_job_killed,
    "truncated_checkpoint": row_truncated_checkpoint, "shard_killed": row_shard_killed,
    "nan_one_rank": row_nan_one_rank, "too_many_workers": row_too_many_workers}


def start_ray(temp: Path) -> str:
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    os.environ.setdefault("RAY_worker_niceness", "0")  # as distgcl's own local Ray (not nice 15)
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")  # a loaded machine starts slowly
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             _node_ip_address="127.0.0.1", log_to_driver=False, _temp_dir=str(temp))
    return ray.get_runtime_context().gcs_address


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, metavar="FAULT[,FAULT]",
                        help=f"run only these rows (of {', '.join(FAULTS)})")
    parser.add_argument("--out", default=str(RESULTS / "faults.json"),
                        help="result file (default: bench/results/faults.json)")
    parser.add_argument("--note", default=None, help="appended to the file's notes")
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else list(FAULTS)
    unknown = [f for f in only if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}; known: {', '.join(FAULTS)}")
    args.faults = only
    return args


NOTES = (
    "Fault injection against the real CLI (distgcl train --num-workers N in its own session; "
    "real processes SIGKILLed by pid). NML mini-batch rows: a 600-node CSBM graph, 2 workers, 4 "
    "epochs of 6 steps, a checkpoint every 4 steps; shard row: E2Neg on Cora, 1 worker, "
    "dist.shards=2 with lobpcg-block, 3 epochs. All rows but too_many_workers join one Ray head "
    "(2 CPUs, 127.0.0.1) started by this script, inside unshare -n; too_many_workers asks for 2 x "
    "CPUs workers from distgcl's own local Ray. seconds_to_outcome: from the fault (the kill, "
    "the truncation, the NaN injection's console line, or the command's start for "
    "too_many_workers) to the process's exit, including a rerun's Ray join and data loading. "
    "metrics_identical_to_clean: per-epoch losses and final probe/clustering metrics equal to "
    "the same config's uninterrupted run in this script. goal_met: the expected outcome within "
    "120 s, identical metrics, no traceback on the console.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="distgcl-faults-"))
    ray_temp = Path("/tmp") / f"ray-faults-{os.getpid()}"  # short: Ray's socket paths
    needs_ray = any(f != "too_many_workers" for f in args.faults)
    rows: list[dict[str, Any]] = []
    try:
        bench = Bench(work, start_ray(ray_temp) if needs_ray else None)
        for fault in args.faults:
            print(f"faults: {fault} ...", flush=True)
            try:
                row = ROWS[fault](bench)
            except (RuntimeError, TimeoutError) as exc:  # the row could not be set up
                row = {"fault": fault, "outcome": "failed", "goal_met": False,
                       "setup_error": str(exc)[-2000:], **load_fields()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if needs_ray:
            import ray

            ray.shutdown()
            shutil.rmtree(ray_temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    write(Path(args.out), rows, NOTES + (f" Note: {args.note}" if args.note else ""))
    return 0 if all(r.get("goal_met") for r in rows) else 1


def write(path: Path, rows: list[dict[str, Any]], notes: str) -> None:
    import datetime as dt

    from distgcl.checkpoint import atomic_write_text

    payload = {"command": command_line(),
               "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "machine": machine_info(), "notes": notes, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
