"""Cost of the proteins-shaped generator and of ogb's first load -> bench/results/proteins_generate.json.

    flock /tmp/distgcl-heavy.lock python bench/proteins_generate.py [--scales 1/16,1/4,1,2]
        [--work DIR] [--seed 0]

Per scale, three measurements, each in its own fresh process (so each ``peak_rss_mb`` is its
own): ``generate`` (:func:`distgcl.data.proteins.generate_proteins`), ``load`` (the first
``load_dataset("ogbn-proteins")``: ogb's ``PygNodePropPredDataset`` parses the gzip CSVs with
pandas, adds the inverse edges and writes its processed file; then the node features) and
``load_cached`` (a second load, from ogb's processed file). ``seconds`` is wall time,
``cpu_seconds`` the process's user + system time (less sensitive to other work on the machine).
A scale already generated in ``--work`` is removed first, so every row measures a fresh write.
A load that would need more than 80 % of the free memory (at 90 bytes per directed edge) is
skipped and recorded as such.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, WORK, write_results  # noqa: E402


# ogb's first load peaked at about 90 bytes per directed edge at scale 1 (7.1 GB)
LOAD_BYTES_PER_EDGE = 90


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(phase: str, scale: float, root: Path, seed: int) -> dict[str, Any]:
    from distgcl.memory import peak_rss_mb

    start = time.perf_counter()
    if phase == "generate":
        from distgcl.data.proteins import MANIFEST, generate_proteins

        path = generate_proteins(root, scale, seed, progress=False)
        seconds = time.perf_counter() - start
        stats = json.loads((path / MANIFEST).read_text())["stats"]
        disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        extra = {"disk_mb": round(disk, 1),
                 **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()
                    if k != "draw_rounds"},
                 "draw_rounds": len(stats["draw_rounds"])}
    else:
        from distgcl.data import load_dataset

        ds = load_dataset("ogbn-proteins", root, cache=root / "cache")
        seconds = time.perf_counter() - start
        extra = {"node_features": int(ds.data.x.size(1))}
    return {"seconds": round(seconds, 2), "cpu_seconds": round(_cpu_seconds(), 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), **extra}


def _run_worker(phase: str, scale: float, root: Path, seed: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", phase, "--scales", str(scale), "--work",
           str(root), "--seed", str(seed)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1/16,1/4,1,2")
    parser.add_argument("--work", default=str(WORK / "proteins"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    scales = [float(Fraction(s)) for s in args.scales.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, scales[0], Path(args.work), args.seed)))
        return

    import psutil

    from distgcl.data.proteins import proteins_size

    rows = []
    for scale in scales:
        root = Path(args.work) / f"scale-{scale:g}"
        shutil.rmtree(root, ignore_errors=True)
        nodes, edges = proteins_size(scale)
        for phase in ("generate", "load", "load_cached"):
            print(f"scale {scale:g}: {phase} ...", flush=True)
            row = {"dataset": "proteins-synthetic", "phase": phase, "scale": scale,
                   "nodes": nodes, "edges": 2 * edges, "undirected_edges": edges}
            need = LOAD_BYTES_PER_EDGE * 2 * edges / 2**20 + 400
            free = psutil.virtual_memory().available / 2**20
            if phase != "generate" and need > 0.8 * free:  # never push the shared box into OOM
                rows.append({**row, "skipped": f"needs about {need:.0f} MB, {free:.0f} MB free"})
                print(f"  skipped: {rows[-1]['skipped']}", flush=True)
                continue
            row.update(_run_worker(phase, scale, root, args.seed))
            rows.append(row)
            print(f"  {row['seconds']} s, peak {row['peak_rss_mb']} MB", flush=True)
    write_results("proteins_generate", rows, notes=(
        "One fresh process per row, run under flock /tmp/distgcl-heavy.lock; other engineers' "
        "light work shared the 2 cores, so wall seconds are noisy (cpu_seconds less so). "
        "edges = directed edges after ogb adds the inverses. load = first load_dataset: ogb "
        "1.3.6 PygNodePropPredDataset processing (pandas read_csv of the gzip CSVs, inverse "
        "edges, torch.save) + distgcl's default node features at the time of the run (see node_features, the column count); load_cached = a "
        "second load from ogb's processed file. peak_rss_mb includes the interpreter, torch and "
        "PyG (about 390 MB). Generator parameters: distgcl.data.proteins.ProteinsModel defaults. " + args.note).strip())


if __name__ == "__main__":
    main()
