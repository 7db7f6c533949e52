"""How big NML-GCL's sampled subgraphs are per scale -> bench/results/sampled_sizes.json.

    python bench/sampled_sizes.py --work bench/results/_work/scale [--batches 8]

The NML-GCL epoch of `distgcl bench scale` grows faster than the edges (slope above 1) although
its step count grows linearly. This measures why: per step, the seeds (1024 anchors plus 1024
uniform candidates), the nodes and edges of their fan-out [10, 5] subgraph, and the seconds of
the sampling alone, on each proteins-shaped graph the sweep generated (`scale-*/`), with the
sampler and the batch rule of configs/proteins_nml.yaml. A fixed fan-out reaches a fixed number
of samples per step; on a small graph most of them are repeats, so the unique nodes per step
(and the encoder's work) grow with the graph until they reach the number of samples.
"""
from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_results  # noqa: E402


def main() -> None:
    import torch

    import distgcl.methods  # noqa: F401  (registers the method sections)
    from distgcl.config import load_config
    from distgcl.data import load_from_config
    from distgcl.sampling import make_neighbor_sampler, uniform_negatives

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "bench/results/_work/scale")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scales = sorted(args.work.glob("scale-*"),
                    key=lambda p: Fraction(p.name.removeprefix("scale-").replace("_", "/")))
    if not scales:
        raise SystemExit(f"no scale-* graphs under {args.work} (run `distgcl bench scale`)")
    rows = []
    for root in scales:
        cfg = load_config(REPO / "configs" / "proteins_nml.yaml",
                          [f"data.root={root}", f"data.cache={root / 'cache'}"])
        data = load_from_config(cfg.data, seed=0).data
        c = cfg.section("nml")
        sampler = make_neighbor_sampler(data.edge_index, data.num_nodes, c.num_neighbors)
        gen = torch.Generator().manual_seed(0)
        nodes, edges, seconds = [], [], []
        for _ in range(args.batches):
            anchors = torch.randperm(data.num_nodes, generator=gen)[:c.batch_size]
            cands = uniform_negatives(data.num_nodes, c.num_negatives, gen)
            seeds = torch.unique(torch.cat([anchors, cands]))
            start = time.perf_counter()
            sub = sampler.sample(seeds, gen)
            seconds.append(time.perf_counter() - start)
            nodes.append(sub.n_id.numel())
            edges.append(sub.edge_index.size(1))
        n = args.batches
        rows.append({"dataset": "proteins-shaped", "method": "nml", "variant": root.name,
                     "nodes": data.num_nodes, "edges": int(data.edge_index.size(1)),
                     "seeds_per_step": int(seeds.numel()),
                     "sampled_nodes_per_step": round(sum(nodes) / n),
                     "sampled_edges_per_step": round(sum(edges) / n),
                     "sampled_fraction_of_graph": round(sum(nodes) / n / data.num_nodes, 3),
                     "sampling_seconds_per_step": round(sum(seconds) / n, 3),
                     "steps_per_epoch": -(-data.num_nodes // c.batch_size)})
        del data, sampler
    write_results("sampled_sizes", rows,
                  "NML-GCL's per-step subgraph on the sweep's proteins-shaped graphs: fan-out "
                  "[10, 5], 1024 anchors + 1024 uniform candidates per step (configs/"
                  f"proteins_nml.yaml), {args.batches} steps per scale, 1 torch thread, CSR "
                  f"sampler (Floyd's algorithm without replacement). {args.note}".strip())


if __name__ == "__main__":
    main()
