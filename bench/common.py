"""Shared helpers for benchmark scripts: run ``distgcl train`` in a fresh process per row
(so peak RSS is per row), and write ``bench/results/*.json`` in the agreed format
(``shared/reference/bench-results.md``)."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
WORK = RESULTS / "_work"


QUIET_MAX_LOAD = 0.5
"""A 1-minute load average at or above this before a run marks its rows ``contended`` (the
threshold of ``shared/tools/quiet``, which waits for it and sets ``DISTGCL_BENCH_LOAD_BEFORE``)."""


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _load_before() -> float:
    """The load before this benchmark: what ``quiet`` measured, else the load at import."""
    value = os.environ.get("DISTGCL_BENCH_LOAD_BEFORE")
    return float(value) if value else _LOAD_AT_IMPORT


_LOAD_AT_IMPORT = _loadavg()


def load_fields(own_load: float | None = None) -> dict[str, Any]:
    """``load_before``, ``load_after`` (1-minute load averages), ``contended`` and the
    ``command``: the fields every timing row carries. ``contended``: the load before was at or
    above :data:`QUIET_MAX_LOAD`, or the benchmark did not run under ``quiet``, or (given the
    benchmark's own busy threads ``own_load``) the load after exceeds its own by that much too,
    i.e. something else ran beside it."""
    before, after = _load_before(), _loadavg()
    under_quiet = "DISTGCL_BENCH_LOAD_BEFORE" in os.environ
    contended = before >= QUIET_MAX_LOAD or not under_quiet
    if own_load is not None:
        contended = contended or after >= own_load + QUIET_MAX_LOAD
    return {"load_before": before, "load_after": after, "under_quiet": under_quiet,
            "contended": contended, "command": command_line()}


def machine_info() -> dict[str, Any]:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def run_distgcl(config: str | Path, overrides: list[str], out_dir: Path,
                timeout: float | None = None) -> dict[str, Any]:
    """Run one training job in its own process; return its ``result.json`` plus ``wall_seconds``
    (with ``$DISTGCL_HEAVY_LOCK`` set, the job waits for and holds that ``flock`` lock file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "distgcl.cli", "train", str(config), "--out", str(out_dir)]
    for item in overrides:
        cmd += ["--set", item]
    cmd += ["--set", "train.progress=false"]
    lock = os.environ.get("DISTGCL_HEAVY_LOCK")  # e.g. /tmp/distgcl-heavy.lock: one heavy job
    if lock:                                     # at a time, the light probes outside the lock
        cmd = ["flock", lock, *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads((out_dir / "result.json").read_text())
    result["wall_seconds"] = wall
    return result


@contextlib.contextmanager
def heavy_lock() -> Iterator[None]:
    """Hold ``$DISTGCL_HEAVY_LOCK`` (``flock``) for in-process heavy work, e.g. long probes."""
    lock = os.environ.get("DISTGCL_HEAVY_LOCK")
    if not lock:
        yield
        return
    import fcntl

    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def row_from_result(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The standard row fields of one ``result.json``."""
    m, t = result["metrics"], result["timing"]
    row: dict[str, Any] = {"dataset": result["dataset"], "method": result["method"]}
    row.update(extra)
    for key in ("accuracy_mean", "accuracy_std", "rocauc_mean", "nmi", "ari", "fmi"):
        if m.get(key) is not None:
            row[key] = round(m[key], 4) if key in ("nmi", "ari", "fmi") else round(m[key], 2)
    row["seconds_per_epoch"] = round(t["seconds_per_epoch"], 4)
    row["train_seconds"] = round(t["train_seconds"], 2)
    memory = result["memory"]
    row["peak_rss_mb"] = round(memory["peak_rss_mb"], 1)
    for key in ("training_peak_rss_mb", "training_extra_mb"):  # absent in older result.json
        if memory.get(key) is not None:
            row[key] = round(memory[key], 1)
    row["epochs"] = result["config"]["train"]["epochs"]
    row["seeds"] = result["config"]["eval"]["probe_seeds"]
    return row


def write_results(name: str, rows: list[dict[str, Any]], notes: str) -> Path:
    """Write ``bench/results/<name>.json`` and print the rows as a table. Every row gets the
    :func:`load_fields` it does not set itself."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = load_fields()
    rows = [{**{k: v for k, v in stamp.items() if k not in row}, **row} for row in rows]
    payload = {"command": command_line(),
               "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "machine": machine_info(), "notes": notes, "rows": rows}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print_table(rows)
    print(f"wrote {path}")
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys))
