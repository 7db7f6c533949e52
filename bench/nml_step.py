"""NML-GCL step, per-edge messages against CSR sparse products -> bench/results/nml_step.json.

    ../shared/tools/quiet python bench/nml_step.py                       # scale 1/4 (issue 19)
    python bench/nml_step.py --scale 1/64 --steps 2 --out /tmp/x.json    # smoke test

Single process, one torch thread, ``configs/proteins_nml.yaml`` (1024 anchors, 1024 uniform
negatives, fan-out [10, 5], T_M = 3) on the graph of ``distgcl generate proteins --scale S``
(written once under ``bench/results/_work/``, then reused). Two NML-GCL instances with the same
seed (same initial weights, same batches), one with ``GCNEncoder.sparse = False`` (PyG's
per-edge messages) and one with ``True`` (CSR sparse x dense products), step in turn, so load
drifting during the run hits both alike. A row's ``seconds_per_step`` is one loop iteration
of the trainer without prefetch: sample the batch (``method.batches``) + ``training_step``;
``step_seconds`` is the step alone. Beside it, one ``GCNConv(128, 128)`` forward + backward on a
random graph (default 60 k nodes / 1 M edges): PyG on ``edge_index``, PyG on a CSR ``adj_t``
(self loops removed, see environment.md section 4), and this project's operator.

Every row records ``load_before`` (``$DISTGCL_BENCH_LOAD_BEFORE`` from ``../shared/tools/quiet``,
else the 1-minute load average at the start), ``load_after``, ``contended`` (either >= 0.5,
quiet's threshold) and ``command``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, WORK, command_line, machine_info, print_table  # noqa: E402

QUIET_LOAD = 0.5
"""Load average from which a row counts as ``contended`` (``../shared/tools/quiet``'s default)."""
VARIANTS = {"messages": False, "sparse": True}


def _load() -> float:
    return os.getloadavg()[0]


def _load_before() -> float:
    env = os.environ.get("DISTGCL_BENCH_LOAD_BEFORE")
    return float(env) if env else _load()


def _scale(text: str) -> float:
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--scale wants a positive fraction like 1/4 "
                                         f"(got {text!r})") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--scale must be > 0 (got {text!r})")
    return value


def _graph_root(scale_text: str, data: Path | None) -> Path:
    """A data root holding the proteins-shaped graph at this scale (generated if missing)."""
    from distgcl.data.proteins import generate_proteins

    root = data or WORK / f"nml-step-proteins-{scale_text.replace('/', '_')}"
    if not (root / "ogbn_proteins" / "distgcl_generated.json").exists():
        print(f"generating the proteins-shaped graph at scale {scale_text} into {root}", flush=True)
        generate_proteins(root, scale=_scale(scale_text), seed=0)
    return root


def _methods(root: Path, seed: int) -> tuple[Any, dict[str, Any]]:
    """The graph and one NML-GCL method per variant, each from the same seed."""
    from distgcl.config import load_config
    from distgcl.data.registry import load_from_config
    from distgcl.methods import build_method
    from distgcl.methods.base import GraphInfo
    from distgcl.train import seed_everything
    from distgcl.work import Work

    config = load_config(REPO / "configs" / "proteins_nml.yaml",
                         [f"data.root={root}", f"data.cache={root / 'cache'}",
                          f"train.seed={seed}", "train.threads=1"])
    dataset = load_from_config(config.data, seed=seed)
    data = dataset.data
    info = GraphInfo(num_nodes=data.num_nodes, num_features=data.num_features,
                     num_classes=dataset.num_classes, multilabel=dataset.multilabel)
    methods = {}
    for variant, sparse in VARIANTS.items():
        seed_everything(seed)
        method = build_method(config, info, Work(seed=seed, device=torch.device("cpu")))
        method.configure_optimizers()
        method.encoder.sparse = sparse
        methods[variant] = method
    return data, methods


def _batches(method: Any, data: Any) -> Iterator[Any]:
    """The method's batches, epoch after epoch (small scales have few batches per epoch)."""
    epoch = 1
    while True:
        yield from method.batches(data, epoch)
        epoch += 1


def time_steps(root: Path, steps: int, warmup: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per variant: seconds of ``steps`` loop iterations (after ``warmup``), taken in turn."""
    from distgcl.train import seed_model_noise

    data, methods = _methods(root, seed)
    loops = {v: _batches(m, data) for v, m in methods.items()}
    out: dict[str, dict[str, Any]] = {v: {"total": [], "step": [], "losses": []} for v in methods}
    noise = {}
    for variant, method in methods.items():  # RReLU's slopes: one stream per variant, the same
        seed_model_noise(method)
        noise[variant] = torch.get_rng_state()
    for i in range(warmup + steps):
        for variant, method in methods.items():
            torch.set_rng_state(noise[variant])
            start = time.perf_counter()
            batch = next(loops[variant])
            mid = time.perf_counter()
            stats = method.training_step(batch)
            end = time.perf_counter()
            noise[variant] = torch.get_rng_state()
            if i >= warmup:
                out[variant]["total"].append(end - start)
                out[variant]["step"].append(end - mid)
            out[variant]["losses"].append(float(stats.get("loss", float("nan"))))
            out[variant]["nodes"] = int(batch.x.size(0))
            out[variant]["edges"] = int(batch.edge_index.size(1))
    return out


def time_conv(nodes: int, edges: int, reps: int, seed: int) -> dict[str, float]:
    """Best-of-``reps`` seconds of one ``GCNConv(128, 128)`` forward + backward, three ways."""
    import warnings

    from torch_geometric.nn import GCNConv
    from torch_geometric.utils import remove_self_loops, to_torch_csr_tensor

    from distgcl.nn.encoder import _sparse_conv, normalized_operator

    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    x = torch.randn(nodes, 128, generator=gen, requires_grad=True)
    torch.manual_seed(seed)
    conv = GCNConv(128, 128)

    def pyg_adj_t() -> torch.Tensor:  # PyG's sparse path: transposed, without self loops
        adj_t = to_torch_csr_tensor(remove_self_loops(edge_index)[0].flip(0), size=(nodes, nodes))
        return conv(x, adj_t)

    ways = {"messages": lambda: conv(x, edge_index), "pyg_adj_t": pyg_adj_t,
            "sparse": lambda: _sparse_conv(conv, x, normalized_operator(conv, edge_index, nodes,
                                                                        x.dtype))}
    best = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support.*")
        for name, fn in ways.items():
            seconds = []
            for _ in range(reps):
                x.grad, conv.lin.weight.grad = None, None
                start = time.perf_counter()
                fn().square().mean().backward()
                seconds.append(time.perf_counter() - start)
            best[name] = min(seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", default="1/4", help="proteins scale, e.g. 1/4 (default)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None,
                        help="data root of an existing graph at this scale")
    parser.add_argument("--conv-nodes", type=int, default=60_000)
    parser.add_argument("--conv-edges", type=int, default=1_000_000)
    parser.add_argument("--conv-reps", type=int, default=3, help="0: skip the GCNConv timing")
    parser.add_argument("--out", type=Path, default=RESULTS / "nml_step.json")
    parser.add_argument("--note", default="", help="text appended to the file's notes")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    scale = _scale(args.scale)
    torch.set_num_threads(1)
    root = _graph_root(args.scale, args.data)

    load_before = _load_before()
    timed = time_steps(root, args.steps, args.warmup, args.seed)
    conv = time_conv(args.conv_nodes, args.conv_edges, args.conv_reps, args.seed) \
        if args.conv_reps > 0 else {}
    load_after = _load()
    # one busy thread of its own: a load after above 1 + 0.5 means something ran beside it
    contended = load_before >= QUIET_LOAD or load_after >= 1 + QUIET_LOAD
    base = {"load_before": round(load_before, 2), "load_after": round(load_after, 2),
            "contended": contended, "command": command_line()}
    rows = []
    for variant, t in timed.items():
        rows.append({"dataset": "proteins-synthetic", "method": "nml", "scale": round(scale, 6),
                     "variant": variant,
                     "seconds_per_step": round(statistics.median(t["total"]), 4),
                     "seconds_per_step_mean": round(statistics.fmean(t["total"]), 4),
                     "step_seconds": round(statistics.median(t["step"]), 4),
                     "steps": args.steps, "threads": 1, "subgraph_nodes": t["nodes"],
                     "subgraph_edges": t["edges"], "loss_first": round(t["losses"][0], 6),
                     **base})
    for variant, seconds in conv.items():
        rows.append({"benchmark": "gcnconv", "variant": variant, "nodes": args.conv_nodes,
                     "edges": args.conv_edges, "channels": 128, "seconds": round(seconds, 4),
                     "reps": args.conv_reps, "threads": 1, **base})
    speedup = rows[0]["seconds_per_step"] / rows[1]["seconds_per_step"]
    notes = (f"NML-GCL mini-batch step (configs/proteins_nml.yaml) on the proteins-shaped graph "
             f"at scale {args.scale}, single process, one torch thread; variants messages "
             f"(PyG per-edge index_select + scatter) and sparse (CSR sparse x dense products, "
             f"GCNEncoder.sparse) from the same seed, stepping in turn; seconds_per_step = median "
             f"of {args.steps} steps after {args.warmup} warm-up (batch sampling + "
             f"training_step), step_seconds the step alone; sparse is {speedup:.2f}x faster. "
             f"gcnconv rows: best of {args.conv_reps} GCNConv(128,128) forward+backward on "
             f"{args.conv_nodes} nodes / {args.conv_edges} random edges (messages: edge_index, "
             f"pyg_adj_t: GCNConv on a CSR adj_t without self loops, sparse: normalized_operator "
             f"+ torch.sparse.mm). load_before/after: 1-minute load average; contended if the load "
             f"before >= {QUIET_LOAD} or after >= 1 + {QUIET_LOAD} (its own thread + others). {args.note}").strip()
    _write(args.out, rows, notes)


def _write(path: Path, rows: list[dict[str, Any]], notes: str) -> None:
    import datetime as dt
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command_line(),
               "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "machine": machine_info(), "notes": notes, "rows": rows}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print_table(rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
