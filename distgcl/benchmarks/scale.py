r"""``distgcl bench scale``: time and memory of GCL on proteins-shaped graphs against their size.

Sweeps ``scale x method x workers`` on graphs of ogbn-proteins' shape written by
``distgcl generate proteins`` in OGB's raw format, and records, per phase, wall seconds and
peak RSS:

* ``generate`` / ``load``: the generator, then the first load through ogb's
  ``PygNodePropPredDataset`` (raw csv.gz -> processed cache -> node features), each in its
  own process;
* per backend, method and worker count, one ``distgcl train CONFIG --num-workers W`` run
  (Ray Train; backend ``local``: the graph in every worker; ``sharded``: ``dist.shards=P``, the
  graph in P graph-shard actors the job's driver starts, for every method), split from its
  ``result.json`` into ``partition`` and ``spectral`` (E2Neg), ``prepare``, ``train_epoch``,
  ``embed``, ``probe`` and ``total`` rows, with every worker's and the driver's peak RSS, the
  shard actors' and the **sum over the run's whole process tree** (driver, Ray's daemons,
  workers, actors; proportional set sizes, sampled every 2 s), every process's own peak RSS by
  role (``processes_peak_rss_mb_each``), graph-store round trips per step
  (``shard_calls_per_step``), plus ROC-AUC; and per backend a ``worker_rss`` slope row (the
  largest worker's peak RSS against edges, log-log) and, for the local backend, its estimate at
  scale 4 from its fit;
* ``shard_memory``: at the largest scale, the resident memory of each graph-shard actor for
  ``P`` shards, beside an empty actor of the same kind (the process without a graph).

Writes ``scale.json`` (``bench-results.md`` format), ``scale.csv``, ``scale_time.png`` and
``scale_memory.png`` (log-log against edges, fitted slopes in the legends) and ``scale.md``
(tables, slopes, and a projection to ogbn-papers100M from the measured per-edge costs) into
``--out``. Every finished item is appended to ``{work}/scale_partial.jsonl``: a sweep that is
interrupted continues where it stopped (``--restart`` starts over).

Memory: the local backend, ``load`` and ``shard_memory`` (whole graph in one process) run only
below scale 2 (``--backend local`` refuses larger scales); every item runs under a guard that
kills its process tree when MemAvailable drops below ``--min-available-gb``.

Run anything that starts Ray inside a private network namespace on shared machines:
``unshare -n sh -c 'ip link set lo up; distgcl bench scale ...'``.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PHASES_E2NEG = ("partition", "spectral", "prepare", "train_epoch", "embed", "probe", "total")
PHASES_OTHER = ("train_epoch", "embed", "probe", "total")
PROTEINS_NODES, PROTEINS_EDGES = 132_534, 79_122_504
BACKENDS = ("local", "sharded")
LOCAL_MAX_SCALE = 2.0
"""The local backend (every worker and ogb's loader hold the whole graph: ogb's first load of
the scale-2 graph peaked at 15.2 GB) runs only below this scale; so do the ``load`` and
``shard_memory`` items, which load the whole graph in one process."""
WORKER_RSS_SLOPE_GOAL = 0.15
"""Issue 18's goal for a Ray Train worker's peak RSS against edges (log-log slope)."""
PAPERS100M = {"nodes": 111_059_956, "edges": 1_615_685_872, "machines": 16,
              "distdgl_seconds_per_epoch": 13.0}


@dataclass
class Sweep:
    """What one ``distgcl bench scale`` run measures (the CLI flags)."""

    scales: list[float] = field(default_factory=lambda: [1 / 16, 1 / 4, 1.0])
    methods: list[str] = field(default_factory=lambda: ["e2neg", "nml", "grace"])
    workers: list[int] = field(default_factory=lambda: [1, 2])
    multi_worker_scales: list[float] | None = None
    """Scales at which worker counts above 1 run (default: all)."""
    backends: list[str] = field(default_factory=lambda: ["local"])
    """``local``: the graph in every worker (no ``dist.shards``); ``sharded``: the graph in
    ``shards`` graph-shard actors started by the job's driver (``dist.shards: P``, every
    method)."""
    shards: int = 4
    """Graph-shard actors of the sharded backend."""
    memory_shards: list[int] = field(default_factory=lambda: [1, 2, 4])
    epochs: dict[str, int] = field(default_factory=dict)
    """Per method: training epochs (default: the config's)."""
    overrides: list[str] = field(default_factory=list)
    threads: int = 1
    seed: int = 0
    work: Path = Path("bench/results/_work/scale")
    out: Path = Path("bench/results")
    configs: Path = REPO_CONFIGS
    timeout: float = 3600.0
    min_available_mb: float = 3072.0
    """Memory guard: an item's whole process tree is killed when the machine's MemAvailable
    drops below this (an out-of-memory kill would take the machine's other work with it)."""
    note: str = ""
    """Appended to the notes (how the rows were measured: machine load, resumed runs)."""

    def check(self) -> None:
        """ValueError (one line) for a sweep this machine must not run."""
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad or not self.backends:
            raise ValueError(f"--backend must be local, sharded or both (got {bad or 'none'})")
        if "sharded" in self.backends and self.shards < 1:
            raise ValueError(f"--shards must be >= 1 for the sharded backend (got {self.shards})")
        big = [_scale_name(s) for s in self.scales if s >= LOCAL_MAX_SCALE]
        if self.backends == ["local"] and big:
            raise ValueError(f"--backend local refuses scale(s) {', '.join(big)} (>= "
                             f"{LOCAL_MAX_SCALE:g}: the whole graph in every worker does not "
                             "fit this machine); use --backend sharded or both")

    def items(self) -> list[tuple[str, ...]]:
        """The sweep in run order; each item's key (a tuple of strings). Below
        :data:`LOCAL_MAX_SCALE` only: ``load``, the local backend's runs, ``shard_memory`` (at
        the largest such scale)."""
        out: list[tuple[str, ...]] = []
        multi = self.multi_worker_scales
        for s in self.scales:
            out.append(("generate", _scale_name(s)))
            if s < LOCAL_MAX_SCALE:
                out.append(("load", _scale_name(s)))
            for b in self.backends:
                if b == "local" and s >= LOCAL_MAX_SCALE:
                    continue
                for m in self.methods:
                    for w in self.workers:
                        if w > 1 and multi is not None and s not in multi:
                            continue
                        out.append(("train", _scale_name(s), m, str(w), b))
        fits = [s for s in self.scales if s < LOCAL_MAX_SCALE]
        for p in self.memory_shards if fits else []:
            out.append(("shard_memory", _scale_name(max(fits)), str(p)))
        return out


def _scale_name(scale: float) -> str:
    return str(Fraction(scale).limit_denominator(4096))


def _scale_value(name: str) -> float:
    return float(Fraction(name))


# ------------------------------------------------------------------------------ measuring

def run_measured(cmd: Sequence[str], log: Path, timeout: float,
                 env: dict[str, str] | None = None,
                 min_available_mb: float = 3072.0) -> dict[str, Any]:
    """Run ``cmd`` with output to ``log``; its wall seconds, the peak of the summed PSS
    (proportional set size: shared pages split among their sharers, so the sum is the memory
    the tree really holds; RSS where PSS is unavailable) of its process tree (polled every
    2 s), each process's peak RSS (:class:`ProcessPeaks`) and the 1-minute load before and
    after. Memory guard: when the machine's MemAvailable falls below ``min_available_mb``
    (checked every 0.25 s) the whole tree is killed. Raises RuntimeError (log's tail) on
    failure."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = _loadavg()
    start = time.perf_counter()
    peak, last_tree = 0.0, -POLL_SECONDS
    peaks = ProcessPeaks()
    with log.open("w") as fh:
        fh.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        root = psutil.Process(proc.pid)
        peaks.driver = proc.pid
        while proc.poll() is None:
            now = time.perf_counter()
            available = mem_available_mb()
            if available is not None and available < min_available_mb:
                _kill_tree(root, proc)
                raise RuntimeError(f"memory guard: MemAvailable {available:.0f} MB < "
                                   f"{min_available_mb:.0f} MB after {now - start:.0f} s: killed "
                                   f"{cmd[0]}... and its processes (log: {log})")
            if now - last_tree >= POLL_SECONDS:
                last_tree = now
                try:
                    tree = [root, *root.children(recursive=True)]
                    peak = max(peak, sum(_pss_bytes(p) for p in tree) / 2**20)
                    peaks.sample(tree)
                except psutil.Error:
                    pass
            if now - start > timeout:
                _kill_tree(root, proc)
                raise RuntimeError(f"{cmd[0]}... timed out after {timeout:.0f} s (log: {log})")
            time.sleep(GUARD_SECONDS)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text()[-2500:]
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd[:6])} ... (log: {log})\n{tail}")
    return {"seconds": round(seconds, 2), "tree_peak_rss_mb": round(peak, 1),
            "processes": peaks.by_role(), "load_before": load_before,
            "load_after": _loadavg()}


POLL_SECONDS = 2.0
GUARD_SECONDS = 0.25


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def mem_available_mb() -> float | None:
    """The machine's ``MemAvailable`` (MB) from ``/proc/meminfo``; None where absent."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _kill_tree(root: Any, proc: subprocess.Popen) -> None:
    """SIGKILL ``root``, every descendant (Ray's daemons, workers and actors are children of
    the driver's Ray) and its session's process group; then reap ``proc``."""
    import psutil
    import signal

    try:
        victims = [root, *root.children(recursive=True)]
    except psutil.Error:
        victims = []
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: the group is the child's pid
    except OSError:
        pass
    proc.wait()


ROLE_OF_TITLE = {"RayTrainWorker": "train_worker", "GraphShardServer": "shard_actor",
                 "EmptyShard": "shard_actor"}
"""Ray's process titles (``ray::<ActorClass>.<method>``) of the processes that matter here."""


@dataclass
class ProcessPeaks:
    """Each process's peak RSS (MB), sampled from outside: the larger of ``VmHWM`` (the
    kernel's high-water mark, so peaks between samples count) and ``VmRSS`` (what a
    ``clear_refs`` reset of the mark inside distgcl would otherwise hide) over the samples,
    with the process's role from its command line (``driver``: the root; ``train_worker``,
    ``shard_actor``: Ray's title of the actor it became; ``ray``: Ray's daemons and other
    workers)."""

    driver: int = -1
    peak_mb: dict[int, float] = field(default_factory=dict)
    role: dict[int, str] = field(default_factory=dict)

    def sample(self, procs: Sequence[Any]) -> None:
        for p in procs:
            mb = _status_peak_mb(p.pid)
            if mb is None:
                continue
            self.peak_mb[p.pid] = max(self.peak_mb.get(p.pid, 0.0), mb)
            role = self._role_of(p)
            if role != "ray" or p.pid not in self.role:  # an IDLE worker later becomes an actor
                self.role[p.pid] = role

    def _role_of(self, p: Any) -> str:
        if p.pid == self.driver:
            return "driver"
        try:
            title = (p.cmdline() or [""])[0]
        except Exception:  # the process ended between listing and reading
            return "ray"
        if title.startswith("ray::"):
            return ROLE_OF_TITLE.get(title[5:].split(".")[0].split()[0], "ray")
        return "ray"

    def by_role(self) -> dict[str, list[float]]:
        """``{role: [peak MB of each process, largest first]}``."""
        out: dict[str, list[float]] = {}
        for pid, mb in self.peak_mb.items():
            out.setdefault(self.role.get(pid, "ray"), []).append(round(mb, 1))
        return {k: sorted(v, reverse=True) for k, v in sorted(out.items())}


def _status_peak_mb(pid: int) -> float | None:
    """max(VmHWM, VmRSS) of ``pid`` in MB from ``/proc/PID/status``; None if unreadable."""
    best = None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    mb = int(line.split()[1]) / 1024.0
                    best = mb if best is None else max(best, mb)
    except OSError:
        return None
    return best


def _pss_bytes(proc: Any) -> int:
    """The process's proportional set size from ``/proc/PID/smaps_rollup`` (one short read;
    psutil's full ``smaps`` walk costs a core for Ray's large mappings), else its RSS."""
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(proc.memory_info().rss)
    except Exception:  # the process ended between listing and reading
        return 0


def _python() -> list[str]:
    return [sys.executable]


# ------------------------------------------------------------------------------ the items

def _paths(sweep: Sweep, scale: str) -> tuple[Path, Path]:
    root = (sweep.work / f"scale-{scale.replace('/', '_')}").resolve()
    return root, root / "cache"


def _generate(sweep: Sweep, scale: str) -> dict[str, Any]:
    root, _ = _paths(sweep, scale)
    cmd = [*_python(), "-m", "distgcl.cli", "generate", "proteins", "--scale", scale,
           "--out", str(root), "--seed", str(sweep.seed)]
    m = run_measured(cmd, sweep.work / "logs" / f"generate-{scale.replace('/', '_')}.log",
                     sweep.timeout, min_available_mb=sweep.min_available_mb)
    info = json.loads((root / "ogbn_proteins" / "distgcl_generated.json").read_text())
    return {"phase": "generate", "seconds": m["seconds"], "peak_rss_mb": m["tree_peak_rss_mb"],
            "nodes": info["num_nodes"], "edges": 2 * info["num_edges"]}


def _load(sweep: Sweep, scale: str) -> dict[str, Any]:
    root, cache = _paths(sweep, scale)
    out = sweep.work / "logs" / f"load-{scale.replace('/', '_')}.json"
    cmd = [*_python(), "-m", "distgcl.benchmarks.scale", "--child", "load", "--root", str(root),
           "--cache", str(cache), "--child-out", str(out)]
    m = run_measured(cmd, out.with_suffix(".log"), sweep.timeout,
                     min_available_mb=sweep.min_available_mb)
    child = json.loads(out.read_text())
    return {"phase": "load", "seconds": child["seconds"], "wall_seconds": m["seconds"],
            "peak_rss_mb": child["peak_rss_mb"], "nodes": child["nodes"],
            "edges": child["edges"], "first_load": child["first_load"]}


def train_command(sweep: Sweep, scale: str, method: str, workers: int,
                  backend: str) -> tuple[list[str], Path]:
    """The ``distgcl train`` command of one train item and its run directory; ValueError for
    the local backend at scale >= :data:`LOCAL_MAX_SCALE` (never, whatever asks)."""
    if backend == "local" and _scale_value(scale) >= LOCAL_MAX_SCALE:
        raise ValueError(f"the local backend refuses scale {scale} (>= {LOCAL_MAX_SCALE:g})")
    root, cache = _paths(sweep, scale)
    name = f"{method}-s{scale.replace('/', '_')}-w{workers}-{backend}"
    storage = (sweep.work / "runs").resolve()
    cmd = [*_python(), "-m", "distgcl.cli", "train", str(sweep.configs / f"proteins_{method}.yaml"),
           "--num-workers", str(workers), "--run-name", name, "--storage", str(storage)]
    sets = [f"data.root={root}", f"data.cache={cache}", f"train.threads={sweep.threads}",
            "train.progress=false", f"train.seed={sweep.seed}", "dist.max_failures=0"]
    if method in sweep.epochs:
        sets.append(f"train.epochs={sweep.epochs[method]}")
    if backend == "sharded":  # the job's driver starts P shard actors, for every method
        sets.append(f"dist.shards={sweep.shards}")
    for item in [*sets, *sweep.overrides]:
        cmd += ["--set", item]
    return cmd, storage / name


def _train(sweep: Sweep, scale: str, method: str, workers: int,
           backend: str = "local") -> dict[str, Any]:
    import shutil

    cmd, run_dir = train_command(sweep, scale, method, workers, backend)
    _, cache = _paths(sweep, scale)

    if run_dir.exists():  # a stale run of an interrupted sweep: never resume it half-measured
        shutil.rmtree(run_dir)
    # every run pays its own preprocessing: no spectral/star cache or partition of an earlier run
    for stale in (cache / "methods", cache / "partitions"):
        shutil.rmtree(stale, ignore_errors=True)
    m = run_measured(cmd, sweep.work / "logs" / f"train-{run_dir.name}.log", sweep.timeout,
                     min_available_mb=sweep.min_available_mb)
    result = json.loads((run_dir / "result.json").read_text())
    return {"phase": "train", "wall_seconds": m["seconds"],
            "tree_peak_rss_mb": m["tree_peak_rss_mb"], "processes": m["processes"],
            "load_before": m["load_before"], "load_after": m["load_after"],
            "store_calls": _store_calls(run_dir / "metrics.jsonl"), "result": _slim(result)}


def _store_calls(path: Path) -> list[float]:
    """Per epoch, the graph-store calls per optimizer step summed over the ranks (NML-GCL's
    ``store_calls`` in ``metrics.jsonl``; result.json does not carry them); [] without."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and "store_calls" in (rec := json.loads(line)):
            out.append(float(rec["store_calls"]))
    return out


def _slim(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("method", "dataset", "timing", "memory", "throughput", "epochs_run", "world_size",
            "graph")
    out = {k: result[k] for k in keep if k in result}
    metrics = result.get("metrics", {})
    out["metrics"] = {k: metrics[k] for k in ("rocauc_mean", "rocauc_std") if k in metrics}
    out["metrics"]["probe_seconds"] = metrics.get("probe", {}).get("seconds")
    out["layers"] = result.get("config", {}).get("model", {}).get("layers")
    if "method_info" in result:
        info = result["method_info"]
        out["method_info"] = {k: info[k] for k in ("spectral", "prepare_seconds", "centres",
                                                   "leaves", "nodes_in_stars", "nodes_total")
                              if k in info}
    return out


def _shard_memory(sweep: Sweep, scale: str, shards: int) -> dict[str, Any]:
    root, cache = _paths(sweep, scale)
    out = sweep.work / "logs" / f"shard-memory-{scale.replace('/', '_')}-p{shards}.json"
    cmd = [*_python(), "-m", "distgcl.benchmarks.scale", "--child", "shard_memory",
           "--root", str(root), "--cache", str(cache), "--shards", str(shards),
           "--partitions", str((sweep.work / "partitions").resolve()),
           "--child-out", str(out)]
    m = run_measured(cmd, out.with_suffix(".log"), sweep.timeout,
                     min_available_mb=sweep.min_available_mb)
    return {"phase": "shard_memory", "wall_seconds": m["seconds"], **json.loads(out.read_text())}


# ------------------------------------------------------------------------------ child phases

def child_load(root: str, cache: str) -> dict[str, Any]:
    from distgcl.data import load_dataset
    from distgcl.memory import peak_rss_mb

    first = not any(Path(cache).glob("processed/*/ogbn_proteins/processed/*")) if \
        Path(cache).exists() else True
    start = time.perf_counter()
    ds = load_dataset("ogbn-proteins", root, cache=cache)
    return {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "nodes": ds.data.num_nodes, "edges": int(ds.data.edge_index.size(1)),
            "first_load": first}


def child_shard_memory(root: str, cache: str, shards: int, partitions: str) -> dict[str, Any]:
    """Partition (cached), then each operator-serving shard actor's memory beside an empty
    actor's (:func:`distgcl.distributed.shards.shard_memory`)."""
    from distgcl.data import load_dataset
    from distgcl.distributed.partition import partition_graph
    from distgcl.distributed.shards import shard_memory

    ds = load_dataset("ogbn-proteins", root, cache=cache)
    start = time.perf_counter()
    manifest = partition_graph(ds.data.edge_index, ds.data.num_nodes, shards, partitions)
    partition_seconds = time.perf_counter() - start
    edges = int(ds.data.edge_index.size(1))
    del ds
    return {"shards": shards, "edges": edges, "partition_seconds": round(partition_seconds, 2),
            **shard_memory(manifest), "nnz": manifest.nnz}


# ------------------------------------------------------------------------------ summary

def rows_from_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bench-results rows of the finished items (phases, slopes)."""
    rows: list[dict[str, Any]] = []
    edges_of: dict[str, int] = {}
    for rec in records:
        key, body = rec["key"], rec["record"]
        scale = key[1]
        base = {"dataset": "proteins-synthetic", "scale": round(_scale_value(scale), 6)}
        if key[0] in ("generate", "load"):
            edges_of[scale] = body["edges"]
            rows.append({**base, "method": "data", "variant": f"scale={scale}", **body})
        elif key[0] == "train":
            rows += _train_rows({**base, "backend": key[4]}, key[2], int(key[3]), body, scale)
        elif key[0] == "shard_memory":
            rows.append(_memory_row(base, body))
    for row in rows:
        if "edges" not in row and str(row.get("_scale")) in edges_of:
            row["edges"] = edges_of[str(row["_scale"])]
        row.pop("_scale", None)
    rows += slope_rows(rows)
    rows += worker_rss_slope_rows(rows)
    mem = [r for r in rows if r.get("phase") == "shard_memory" and r.get("graph_part_mb")]
    if len(mem) >= 2:
        x = np.log([r["shards"] for r in mem])
        y = np.log([r["graph_part_mb"] for r in mem])
        slope = float(np.polyfit(x, y, 1)[0])
        rows.append({"dataset": "proteins-synthetic", "method": "graph-shards",
                     "variant": "memory vs shards", "phase": "slope",
                     "memory_slope_vs_shards": round(slope, 3),
                     "shards": [r["shards"] for r in mem]})
    return rows


def _train_rows(base: dict[str, Any], method: str, workers: int, body: dict[str, Any],
                scale: str) -> list[dict[str, Any]]:
    res = body["result"]
    timing, memory, metrics = res["timing"], res["memory"], res["metrics"]
    info = res.get("method_info", {})
    spectral = info.get("spectral", {})
    common = {**base, "method": method, "workers": workers,
              "variant": f"workers={workers} backend={base['backend']}",
              "rocauc_mean": metrics.get("rocauc_mean"), "_scale": scale}
    workers_rss = memory.get("workers_peak_rss_mb", [])
    each = processes_each(body.get("processes", {}), workers_rss,
                          memory.get("driver_peak_rss_mb"))
    rss = {"workers_peak_rss_mb": workers_rss,
           "driver_peak_rss_mb": memory.get("driver_peak_rss_mb"),
           # the actors' whole lives (the spectral step's reading is taken after it only)
           "shard_peak_rss_mb": each.get("shard_actor") or spectral.get("shard_peak_rss_mb"),
           "processes_peak_rss_mb": body["tree_peak_rss_mb"],
           "processes_peak_rss_mb_each": each,
           "worker_peak_rss_mb": max(each.get("train_worker") or [0.0]) or None,
           "process_peak_rss_mb_max": max((v for vs in each.values() for v in vs),
                                          default=None),
           "graph_backend": res.get("graph", {}).get("backend"),
           "worker_loaded_dataset": res.get("graph", {}).get("worker_loaded_dataset")}
    common.update(_load_row_fields(body))
    probe = metrics.get("probe_seconds") or 0.0
    phases: dict[str, dict[str, Any]] = {
        "train_epoch": {"seconds": timing["seconds_per_epoch"],
                        "epochs": res.get("epochs_run"),
                        "peak_rss_mb": max(workers_rss) if workers_rss else None,
                        "anchors_per_second": res.get("throughput", {}).get(
                            "anchors_per_second"),
                        **_calls_fields(body.get("store_calls", []), res, base["backend"])},
        "embed": {"seconds": round(timing["eval_seconds"] - probe, 2)},
        "probe": {"seconds": probe},
        "total": {"seconds": body["wall_seconds"], "peak_rss_mb": body["tree_peak_rss_mb"],
                  **rss},
    }
    if spectral:
        shards = spectral.get("shards", 0)
        phases = {"partition": {"seconds": spectral.get("partition_seconds", 0.0),
                                "shards": shards, "order": spectral.get("order")},
                  "spectral": {"seconds": round(spectral.get("seconds", 0.0)
                                                + spectral.get("shard_start_seconds", 0.0), 2),
                               "solve_seconds": spectral.get("seconds"), "shards": shards,
                               "matvecs": spectral.get("matvecs"),
                               "residual_max": spectral.get("residual_max"),
                               "shard_peak_rss_mb": spectral.get("shard_peak_rss_mb"),
                               "k": spectral.get("k")},
                  "prepare": {"seconds": timing["prepare_seconds"],
                              "centres": info.get("centres"), "leaves": info.get("leaves")},
                  **phases}
    return [{**common, "phase": phase, **{k: v for k, v in fields.items() if v is not None}}
            for phase, fields in phases.items()]


def processes_each(sampled: dict[str, list[float]], workers: Sequence[float],
                   driver: float | None) -> dict[str, list[float]]:
    """Every process's peak RSS (MB) by role: the outside samples (:class:`ProcessPeaks`) with
    the driver's and the workers' own readings from result.json. Workers: the elementwise max
    of both lists sorted largest first (each list is a lower bound of each process's peak, so
    this is too, and the tighter; the outside catches the chief's evaluation, which its own
    reading, taken before it, misses)."""
    out = {k: list(v) for k, v in sampled.items()}
    if driver is not None:
        out["driver"] = [round(max([driver, *out.get("driver", [])]), 1)]
    if workers:
        a = sorted(workers, reverse=True)
        b = out.get("train_worker", [])
        n = max(len(a), len(b))
        a, b = a + [0.0] * (n - len(a)), b + [0.0] * (n - len(b))
        out["train_worker"] = [round(max(x, y), 1) for x, y in zip(a, b)]
    return out


def _load_row_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``load_before``/``load_after`` (1-minute load averages around the item) and
    ``contended`` (the load before was >= 0.5, or the sweep did not run under ``quiet``:
    bench/common.py's rule)."""
    if "load_before" not in body:
        return {}
    quiet = os.environ.get("DISTGCL_BENCH_LOAD_BEFORE")
    before = float(quiet) if quiet else body["load_before"]
    return {"load_before": before, "load_after": body["load_after"],
            "under_quiet": bool(quiet), "contended": before >= 0.5 or not quiet}


def _calls_fields(calls: Sequence[float], res: dict[str, Any], backend: str) -> dict[str, Any]:
    """Graph-store calls per step and worker (``metrics.jsonl`` sums them over the ranks);
    with the sharded backend each is one round trip to the shards: ``shard_calls_per_step``
    beside its goal ``2 * layers + 2``."""
    if not calls:
        return {}
    per_step = float(np.mean(calls)) / max(int(res.get("world_size") or 1), 1)
    out: dict[str, Any] = {"store_calls_per_step": round(per_step, 2)}
    if backend == "sharded":
        out["shard_calls_per_step"] = round(per_step, 2)
        if res.get("layers"):
            out["shard_calls_goal_max"] = 2 * int(res["layers"]) + 2
    return out


def _memory_row(base: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    actors = body["actors"]
    empty = body["empty_actor"]
    # GraphShardServer.memory_mb() reports rss / uss / peak_rss (MB)
    rss = [round(a.get("rss", 0.0), 1) for a in actors]
    uss = [round(a.get("uss", 0.0), 1) for a in actors]
    part = float(np.mean(uss)) - empty.get("uss_mb", 0.0)
    return {**base, "method": "graph-shards", "variant": f"shards={body['shards']}",
            "phase": "shard_memory", "shards": body["shards"], "edges": body["edges"],
            "actor_rss_mb": rss, "actor_uss_mb": uss,
            "actor_peak_rss_mb": [round(a.get("peak_rss", 0.0), 1) for a in actors],
            "empty_actor_rss_mb": empty.get("rss_mb"),
            "empty_actor_uss_mb": empty.get("uss_mb"), "graph_part_mb": round(part, 1),
            "partition_seconds": body["partition_seconds"], "nnz": body["nnz"]}


def slope_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fitted log-log slopes of seconds and peak RSS against edges, per (method, workers, phase,
    backend) over the scales measured (at least two)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("phase") in (None, "slope", "shard_memory") or "edges" not in r:
            continue
        groups.setdefault((r["method"], r.get("workers"), r["phase"], r.get("backend")),
                          []).append(r)
    out = []
    for (method, workers, phase, backend), group in sorted(groups.items(),
                                                          key=lambda kv: str(kv[0])):
        pts = [r for r in group if (r.get("seconds") or 0) > 0]
        if len({r["edges"] for r in pts}) < 2:
            continue
        x = np.log([r["edges"] for r in pts])
        row = {"dataset": "proteins-synthetic", "method": method, "workers": workers,
               "variant": f"{phase} vs edges", "phase": "slope", "of_phase": phase,
               "scales": [r["scale"] for r in pts],
               "time_slope": round(float(np.polyfit(x, np.log([r["seconds"] for r in pts]),
                                                    1)[0]), 3)}
        if backend is not None:
            row["backend"] = backend
        mem = [r for r in pts if r.get("peak_rss_mb")]
        if len({r["edges"] for r in mem}) >= 2:
            row["memory_slope"] = round(float(np.polyfit(
                np.log([r["edges"] for r in mem]), np.log([r["peak_rss_mb"] for r in mem]),
                1)[0]), 3)
        out.append(row)
    return out


def log_log_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    r"""Least-squares line through :math:`(\log x_i, \log y_i)`: ``(slope, intercept)``, i.e.
    :math:`y \approx e^{b} x^{a}`; the slope :math:`a = d\log y / d\log x` is dimensionless
    (0: flat, 1: proportional). ``x``, ``y``: positive, at least two distinct ``x``."""
    a, b = np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)
    return float(a), float(b)


def worker_rss_slope_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backend, method, workers): a Ray Train worker's peak RSS (the largest worker's, from
    the ``total`` rows' ``worker_peak_rss_mb``) against directed edges over the scales measured
    (at least two): ``worker_rss_slope`` = d log(RSS) / d log(edges), beside issue 18's goal
    :data:`WORKER_RSS_SLOPE_GOAL`."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("phase") == "total" and r.get("worker_peak_rss_mb") and "edges" in r:
            groups.setdefault((r.get("backend"), r["method"], r.get("workers")), []).append(r)
    out = []
    for (backend, method, workers), group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        pts = sorted(group, key=lambda r: r["edges"])
        if len({r["edges"] for r in pts}) < 2:
            continue
        slope, _ = log_log_slope([r["edges"] for r in pts],
                                 [r["worker_peak_rss_mb"] for r in pts])
        out.append({"dataset": "proteins-synthetic", "method": method, "workers": workers,
                    "backend": backend, "variant": "worker peak RSS vs edges", "phase": "slope",
                    "of_phase": "worker_rss", "scales": [r["scale"] for r in pts],
                    "edges": [r["edges"] for r in pts],
                    "worker_peak_rss_mb": [r["worker_peak_rss_mb"] for r in pts],
                    "worker_rss_slope": round(slope, 3), "goal_max": WORKER_RSS_SLOPE_GOAL,
                    "meets_goal": bool(slope <= WORKER_RSS_SLOPE_GOAL),
                    "note": "dimensionless: least-squares slope of log(largest worker's peak "
                            "RSS) against log(directed edges); 0 = does not grow with the "
                            "graph, 1 = proportional to it"})
    return out


def local_estimate_rows(rows: list[dict[str, Any]], scale: float = 4.0) -> list[dict[str, Any]]:
    """The local backend at ``scale`` (never run there: it does not fit) on paper: the largest
    worker's peak RSS and the summed PSS extrapolated along their log-log fits over the
    measured local scales (at least two), at ``scale`` x proteins' directed edges."""
    from distgcl.data.proteins import proteins_size

    edges = 2 * proteins_size(scale)[1]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("phase") == "total" and r.get("backend") == "local" and "edges" in r:
            groups.setdefault((r["method"], r.get("workers")), []).append(r)
    out = []
    for (method, workers), pts in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if len({r["edges"] for r in pts}) < 2:
            continue
        row: dict[str, Any] = {"dataset": "proteins-synthetic", "method": method,
                               "workers": workers, "backend": "local", "phase": "projection",
                               "variant": f"local at scale {scale:g} (estimate)",
                               "scale": scale, "edges": edges,
                               "from_scales": sorted(r["scale"] for r in pts)}
        for y in ("worker_peak_rss_mb", "processes_peak_rss_mb"):
            have = [r for r in pts if r.get(y)]
            if len({r["edges"] for r in have}) >= 2:
                a, b = log_log_slope([r["edges"] for r in have], [r[y] for r in have])
                row[f"{y}_estimate"] = round(float(np.exp(b) * edges ** a), 1)
                row[f"{y}_slope"] = round(a, 3)
        row["assumptions"] = ("power law in the directed edges fitted over the local scales "
                              "measured; not measured (the local backend refuses scale >= "
                              f"{LOCAL_MAX_SCALE:g})")
        out.append(row)
    return out


def projection_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ogbn-papers100M on 16 machines from the measured per-edge and per-anchor costs (on
    paper: assumptions in each row's ``assumptions``)."""
    out = []
    p = PAPERS100M
    mem = [r for r in rows if r.get("phase") == "shard_memory" and r.get("graph_part_mb")]
    per_shard_edges = p["edges"] / p["machines"]
    if mem:
        r = max(mem, key=lambda r: r["shards"])
        bytes_per_edge = r["graph_part_mb"] * 2**20 / (r["edges"] / r["shards"])
        out.append({"dataset": "ogbn-papers100M", "method": "graph-shards", "phase": "projection",
                    "variant": f"{p['machines']} shards", "shards": p["machines"],
                    "shard_graph_mb": round(bytes_per_edge * per_shard_edges / 2**20),
                    "bytes_per_edge": round(bytes_per_edge, 2),
                    "assumptions": "shard memory grows with its directed edges at the "
                                   f"bytes/edge measured with {r['shards']} proteins shards "
                                   "(float32 operator); halo rows not counted"})
    spectral = [r for r in rows if r.get("method") == "e2neg" and r.get("phase") == "spectral"
                and r.get("shards")]
    epoch = {(r["scale"], r.get("workers"), r.get("backend")): r for r in rows
             if r.get("method") == "e2neg" and r.get("phase") == "train_epoch"}
    if spectral:
        r = max(spectral, key=lambda r: r["scale"])
        measured_per_shard = r["edges"] / r["shards"]
        e = epoch.get((r["scale"], r.get("workers"), r.get("backend")), {})
        out.append({"dataset": "ogbn-papers100M", "method": "e2neg", "phase": "projection",
                    "variant": f"spectral step over {p['machines']} shards",
                    "shards": p["machines"],
                    "spectral_seconds": round(r["seconds"] * per_shard_edges
                                              / measured_per_shard),
                    "seconds_per_epoch": e.get("seconds"),
                    "distdgl_seconds_per_epoch": p["distdgl_seconds_per_epoch"],
                    "assumptions": f"the spectral step's time grows with the edges per shard from "
                                   f"the {r['seconds']:.0f} s measured at scale {r['scale']} over "
                                   f"{r['shards']} shards (the same number of block products; "
                                   "halo exchange and network not modelled); an epoch trains on "
                                   "the K centres' stars only, so its time does not grow with N "
                                   "(the measured epoch)"})
    for method in ("nml", "grace"):
        epochs = [r for r in rows if r.get("method") == method and r.get("phase") == "train_epoch"
                  and r.get("anchors_per_second")]
        if not epochs:
            continue
        best = max(epochs, key=lambda r: (r["scale"], r.get("workers", 1)))
        per_worker = best["anchors_per_second"] / best.get("workers", 1)
        seconds = p["nodes"] / (per_worker * p["machines"])
        out.append({"dataset": "ogbn-papers100M", "method": method, "phase": "projection",
                    "variant": f"{p['machines']} machines x 1 worker",
                    "workers": p["machines"], "seconds_per_epoch": round(seconds, 1),
                    "distdgl_seconds_per_epoch": p["distdgl_seconds_per_epoch"],
                    "ratio_vs_distdgl": round(seconds / p["distdgl_seconds_per_epoch"], 1),
                    "anchors_per_second_per_worker": round(per_worker, 1),
                    "assumptions": f"every node an anchor once per epoch at the anchors/s per "
                                   f"worker measured at scale {best['scale']} with "
                                   f"{best.get('workers', 1)} worker(s) on 1 CPU thread; "
                                   "fan-out cost independent of N (fixed fan-out); no network "
                                   "cost beyond what Ray/gloo cost here; DistDGL's 13 s is "
                                   "supervised GraphSAGE over the 1.2 M labelled nodes"})
    return out


# ------------------------------------------------------------------------------ outputs

def _machine() -> dict[str, Any]:
    import psutil
    import torch

    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "python": platform.python_version()}


def write_outputs(sweep: Sweep, records: list[dict[str, Any]], command: str,
                  missing: Sequence[str] = ()) -> dict[str, Path]:
    rows = rows_from_records(records)
    rows += projection_rows(rows)
    rows += local_estimate_rows(rows)
    sweep.out.mkdir(parents=True, exist_ok=True)
    notes = ("proteins-shaped graphs from `distgcl generate proteins` (OGB raw format, loaded by "
             "ogb's PygNodePropPredDataset); each train row is one `distgcl train` through Ray "
             f"Train on {sweep.threads} torch thread(s) per worker; backend `local`: the graph "
             "in every worker (no dist.shards), `sharded`: in "
             f"{sweep.shards} graph-shard actors started by the job's driver (dist.shards="
             f"{sweep.shards}, every method); the local backend, ogb's `load` and `shard_memory` "
             f"run only below scale {LOCAL_MAX_SCALE:g}; every item ran under a memory guard "
             f"(its process tree killed below {sweep.min_available_mb:.0f} MB MemAvailable). "
             "`processes_peak_rss_mb` is the peak of the "
             "summed PSS of the run's process tree (driver, Ray daemons, workers, actors; shared "
             "pages split among their sharers), sampled every 2 s; "
             "`processes_peak_rss_mb_each`: every process's peak RSS by role (max of VmHWM and "
             "VmRSS sampled every 2 s, with the driver's and workers' own readings); "
             "`shard_calls_per_step`: graph-store round trips per step and worker (NML-GCL's "
             "`store_calls` in metrics.jsonl over the world size); `worker_rss` slope: "
             "d log(largest worker's peak RSS) / d log(edges), goal <= "
             f"{WORKER_RSS_SLOPE_GOAL}. Slopes: least squares in log-log "
             "against directed edges over the scales measured. ROC-AUC: linear probe (BCE over "
             "112 tasks, ogb's Evaluator) on the species split; epochs: "
             f"{sweep.epochs or 'the configs'}; overrides: {sweep.overrides or 'none'}."
             + (f" Not measured (items of this sweep without a result): {', '.join(missing)}."
                if missing else "") + (f" {sweep.note}" if sweep.note else ""))
    doc = {"command": command, "created": dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "machine": _machine(), "notes": notes, "rows": rows}
    paths = {"json": sweep.out / "scale.json", "csv": sweep.out / "scale.csv",
             "time_plot": sweep.out / "scale_time.png",
             "memory_plot": sweep.out / "scale_memory.png", "report": sweep.out / "scale.md"}
    _atomic(paths["json"], json.dumps(doc, indent=1) + "\n")
    columns = sorted({k for r in rows for k in r if not isinstance(r[k], (list, dict))})
    first = ["dataset", "method", "variant", "scale", "edges", "workers", "phase", "seconds",
             "peak_rss_mb", "rocauc_mean"]
    columns = [c for c in first if c in columns] + [c for c in columns if c not in first]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    _atomic(paths["csv"], table.getvalue())
    _plots(rows, paths["time_plot"], paths["memory_plot"])
    _atomic(paths["report"], markdown_report(rows, command, notes, paths))
    return paths


def _atomic(path: Path, text: str) -> None:
    from distgcl.checkpoint import atomic_write_text  # imports torch: not at CLI start-up

    atomic_write_text(path, text)


def _plots(rows: list[dict[str, Any]], time_path: Path, memory_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one series per backend: the backend joins the method's name in keys and legends
    rows = [{**r, "method": f"{r['method']} [{r['backend']}]"} if r.get("backend") else r
            for r in rows]
    slopes = {(r["method"], r.get("workers"), r["of_phase"]): r for r in rows
              if r.get("phase") == "slope" and "of_phase" in r}
    _time_plot(rows, slopes, time_path, plt)
    _memory_plot(rows, slopes, memory_path, plt)


def _memory_plot(rows: list[dict[str, Any]], slopes: dict[tuple[Any, ...], dict[str, Any]],
                 path: Path, plt: Any) -> None:
    """Peak RSS against edges per method and phase, beside shard-actor memory against P."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), squeeze=False)
    ax = axes[0][0]
    series: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("phase") not in ("total", "generate", "load", "train_epoch") or \
                not r.get("peak_rss_mb") or "edges" not in r:
            continue
        series.setdefault((r["method"], r.get("workers"), r["phase"]), []).append(r)

    def label(key: tuple[Any, ...], fit: float | None) -> str:
        method, workers, phase = key
        return f"{method}{'' if workers is None else f' w={workers}'} {phase}" + \
            (f" (slope {fit:.2f})" if fit is not None else "")

    _edges_panel(ax, series, "peak_rss_mb",
                 lambda key: slopes.get(key, {}).get("memory_slope"), label,
                 ylabel="peak RSS (MB)",
                 title="peak memory (total: summed over the run's processes)")
    ax2 = axes[0][1]
    mem = sorted((r for r in rows if r.get("phase") == "shard_memory"), key=lambda r: r["shards"])
    if mem:
        ax2.plot([r["shards"] for r in mem], [r["graph_part_mb"] for r in mem], marker="o",
                 label="graph part per actor (USS - empty actor)")
        ax2.plot([r["shards"] for r in mem], [mem[0]["graph_part_mb"] / r["shards"] for r in mem],
                 ls="--", label="1/P of one shard")
        ax2.set_xscale("log", base=2)
        ax2.set_yscale("log")
        ax2.set_xlabel("shards P")
        ax2.set_ylabel("MB per actor")
        ax2.set_title("graph-shard actor memory at the largest scale")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time_plot(rows: list[dict[str, Any]], slopes: dict[tuple[Any, ...], dict[str, Any]],
               path: Path, plt: Any) -> None:
    """Seconds per phase against edges, one log-log panel per method (slopes in the legends)."""
    series: dict[str, dict[tuple[Any, str], list[dict[str, Any]]]] = {}
    for r in rows:
        if r.get("phase") in (None, "slope", "projection", "shard_memory") or \
                not r.get("seconds") or "edges" not in r:
            continue
        series.setdefault(r["method"], {}).setdefault((r.get("workers"), r["phase"]),
                                                      []).append(r)
    methods = sorted(series)
    cols = 2 if len(methods) > 1 else 1
    rows_n = -(-len(methods) // cols) or 1
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.5 * cols, 4.5 * rows_n), squeeze=False)
    def label(key: tuple[Any, str], fit: float | None) -> str:
        workers, phase = key
        return f"{phase}{'' if workers is None else f' (w={workers})'}" + \
            (f", slope {fit:.2f}" if fit is not None else "")

    for ax, method in zip([a for row in axes for a in row], methods):
        _edges_panel(ax, series[method], "seconds",
                     lambda key, m=method: slopes.get((m, *key), {}).get("time_slope"), label,
                     ylabel="seconds", title=method)
    for ax in [a for row in axes for a in row][len(methods):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _edges_panel(ax: Any, series: dict[Any, list[dict[str, Any]]], y: str,
                 fit_of: Callable[[Any], float | None],
                 label_of: Callable[[Any, float | None], str], *, ylabel: str,
                 title: str) -> None:
    """One log-log panel: each series' ``y`` against edges, labelled with its fitted slope."""
    for key, pts in sorted(series.items(), key=lambda kv: str(kv[0])):
        pts = sorted(pts, key=lambda r: r["edges"])
        ax.plot([r["edges"] for r in pts], [r[y] for r in pts], marker="o",
                label=label_of(key, fit_of(key)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("directed edges")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int) and abs(v) >= 10000:
            return f"{v:,}"
        if isinstance(v, list):
            return ", ".join(fmt(x) for x in v)
        return "" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |\n"
                          for r in rows)


def markdown_report(rows: list[dict[str, Any]], command: str, notes: str,
                    paths: dict[str, Path]) -> str:
    phases = [r for r in rows if r.get("phase") not in ("slope", "projection", "shard_memory")]
    parts = [f"# Scaling GCL to ogbn-proteins' size\n\n`{command}`\n\n{notes}\n",
             f"![time]({paths['time_plot'].name})\n\n![memory]({paths['memory_plot'].name})\n",
             "## Phases\n\n" + _table(phases, ["method", "backend", "workers", "scale", "edges",
                                               "phase", "seconds", "peak_rss_mb",
                                               "shard_calls_per_step", "rocauc_mean"]),
             "## Every process's peak RSS (MB)\n\n" + _table(
                 [{**r, **{f"{k} MB": v for k, v in r["processes_peak_rss_mb_each"].items()}}
                  for r in phases if r.get("phase") == "total"
                  and r.get("processes_peak_rss_mb_each")],
                 ["method", "backend", "workers", "scale", "driver MB", "train_worker MB",
                  "shard_actor MB", "process_peak_rss_mb_max", "processes_peak_rss_mb"]),
             "## Worker peak RSS against edges (goal: slope <= "
             f"{WORKER_RSS_SLOPE_GOAL})\n\n" + _table(
                 [r for r in rows if r.get("of_phase") == "worker_rss"],
                 ["method", "backend", "workers", "scales", "worker_peak_rss_mb",
                  "worker_rss_slope", "meets_goal"]),
             "## Fitted slopes against edges\n\n" + _table(
                 [r for r in rows if r.get("phase") == "slope"
                  and r.get("of_phase") != "worker_rss"],
                 ["method", "backend", "workers", "variant", "scales", "time_slope",
                  "memory_slope", "memory_slope_vs_shards"]),
             "## The local backend where it does not fit (estimates)\n\n" + _table(
                 [r for r in rows if r.get("phase") == "projection" and r.get("backend")],
                 ["method", "workers", "scale", "edges", "from_scales",
                  "worker_peak_rss_mb_estimate", "processes_peak_rss_mb_estimate"]),
             "## Graph-shard memory\n\n" + _table(
                 [r for r in rows if r.get("phase") == "shard_memory"],
                 ["shards", "actor_uss_mb", "empty_actor_uss_mb", "graph_part_mb", "nnz"]),
             "## Projection: ogbn-papers100M on 16 machines (on paper)\n\n" + _table(
                 [r for r in rows if r.get("phase") == "projection" and not r.get("backend")],
                 ["method", "variant", "seconds_per_epoch", "spectral_seconds",
                  "distdgl_seconds_per_epoch", "ratio_vs_distdgl", "shard_graph_mb",
                  "assumptions"])]
    return "\n".join(parts)


# ------------------------------------------------------------------------------ driver

def run_sweep(sweep: Sweep, restart: bool = False, command: str = "",
              report_only: bool = False) -> dict[str, Path]:
    """Run (or continue) the sweep and write its outputs; returns their paths.
    ``report_only``: run nothing, write the outputs of the items finished so far (the missing
    ones are listed in the notes)."""
    from tqdm import tqdm

    sweep.check()
    sweep.work.mkdir(parents=True, exist_ok=True)
    partial = sweep.work / "scale_partial.jsonl"
    if restart and partial.exists():
        partial.unlink()
    done: dict[tuple[str, ...], dict[str, Any]] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[tuple(rec["key"])] = rec
    items = sweep.items()
    todo = [] if report_only else [k for k in items if k not in done]
    if done:
        print(f"distgcl bench scale: {len(items) - len(todo)} of {len(items)} items done "
              f"before ({partial}); continuing", flush=True)
    failures = []
    with tqdm(total=len(items), initial=len(items) - len(todo), desc="bench scale",
              unit="item", dynamic_ncols=True) as bar:
        for key in todo:
            bar.set_postfix_str(" ".join(key))
            try:
                record = _run_item(sweep, key)
            except RuntimeError as exc:
                failures.append((key, str(exc).splitlines()[0]))
                print(f"\ndistgcl bench scale: {' '.join(key)} failed: {exc}", flush=True)
                bar.update(1)
                continue
            rec = {"key": list(key), "record": record,
                   "finished": dt.datetime.now(dt.timezone.utc).isoformat()}
            with partial.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            done[key] = rec
            bar.update(1)
    records = [done[k] for k in items if k in done]
    missing = [" ".join(k) for k in items if k not in done]
    paths = write_outputs(sweep, records, command, missing)
    if failures:
        print(f"distgcl bench scale: {len(failures)} item(s) failed (rerun to retry them): " +
              "; ".join(f"{' '.join(k)}: {why}" for k, why in failures), flush=True)
    return paths


def _run_item(sweep: Sweep, key: tuple[str, ...]) -> dict[str, Any]:
    kind = key[0]
    if kind == "generate":
        return _generate(sweep, key[1])
    if kind == "load":
        return _load(sweep, key[1])
    if kind == "train":
        return _train(sweep, key[1], key[2], int(key[3]), key[4])
    if kind == "shard_memory":
        return _shard_memory(sweep, key[1], int(key[2]))
    raise ValueError(f"unknown sweep item {key}")


def _scales(text: str) -> list[float]:
    try:
        values = [float(Fraction(s)) for s in text.split(",") if s.strip()]
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"scales must look like 1/16,1/4,1 (got {text!r})")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be > 0 (got {text!r})")
    return values


def _ints(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2 (got {text!r})")
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers (got {text!r})")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scales", type=_scales, default=[1 / 16, 1 / 4, 1.0],
                        help="fractions of ogbn-proteins (default 1/16,1/4,1)")
    parser.add_argument("--methods", default="e2neg,nml,grace",
                        help="methods with a configs/proteins_<method>.yaml (default all three)")
    parser.add_argument("--workers", type=_ints, default=[1, 2],
                        help="Ray Train worker counts (default 1,2)")
    parser.add_argument("--multi-worker-scales", type=_scales, default=None,
                        help="run worker counts > 1 only at these scales (default: every scale)")
    parser.add_argument("--backend", choices=["local", "sharded", "both"], default="local",
                        help="local: the graph in every worker; sharded: in --shards graph-shard "
                             "actors (dist.shards, every method); both: each, the local one "
                             f"below scale {LOCAL_MAX_SCALE:g} only (default local)")
    parser.add_argument("--shards", type=int, default=4,
                        help="graph-shard actors P of the sharded backend (default 4)")
    parser.add_argument("--min-available-gb", type=float, default=3.0,
                        help="memory guard: kill an item's processes when the machine's "
                             "MemAvailable drops below this (default 3)")
    parser.add_argument("--memory-shards", type=_ints, default=[1, 2, 4],
                        help="shard counts of the memory-per-actor rows at the largest scale")
    parser.add_argument("--epochs", action="append", default=[], metavar="METHOD=N",
                        help="training epochs of one method (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for every train run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="bench/results/_work/scale",
                        help="generated graphs, caches, runs, logs and the resume file")
    parser.add_argument("--out", default="bench/results", help="where the outputs go")
    parser.add_argument("--configs", default=str(REPO_CONFIGS),
                        help="folder with proteins_<method>.yaml")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds one item may take")
    parser.add_argument("--restart", action="store_true",
                        help="forget the finished items of an earlier sweep")
    parser.add_argument("--note", default="",
                        help="text appended to the notes of scale.json / scale.md")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write the outputs from the items finished so far")


def sweep_from_args(args: argparse.Namespace) -> Sweep:
    epochs = {}
    for item in args.epochs:
        method, _, value = item.partition("=")
        if not value.isdigit():
            raise ValueError(f"--epochs takes METHOD=N (got {item!r})")
        epochs[method] = int(value)
    methods = [m for m in args.methods.split(",") if m]
    configs = Path(args.configs)
    missing = [m for m in methods if not (configs / f"proteins_{m}.yaml").is_file()]
    if missing:
        raise ValueError("no config for method(s) " + ", ".join(
            f"{m} ({configs / f'proteins_{m}.yaml'})" for m in missing))
    if args.min_available_gb < 0.5:
        raise ValueError(f"--min-available-gb must be >= 0.5 (got {args.min_available_gb:g})")
    backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    sweep = Sweep(scales=args.scales, methods=methods, workers=args.workers,
                  multi_worker_scales=args.multi_worker_scales, shards=args.shards,
                  backends=backends, min_available_mb=args.min_available_gb * 1024,
                  memory_shards=args.memory_shards, epochs=epochs, overrides=args.overrides,
                  threads=args.threads, seed=args.seed, work=Path(args.work),
                  out=Path(args.out), configs=configs, timeout=args.timeout, note=args.note)
    sweep.check()
    return sweep


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True, choices=["load", "shard_memory"])
    parser.add_argument("--root", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--partitions", default=None)
    parser.add_argument("--child-out", required=True)
    args = parser.parse_args(argv)
    if args.child == "load":
        out = child_load(args.root, args.cache)
    else:
        out = child_shard_memory(args.root, args.cache, args.shards, args.partitions)
    _atomic(Path(args.child_out), json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
