"""Command line: ``distgcl train CONFIG [--set KEY=VALUE ...] [--out DIR] [--use-gpu]
[--num-workers N [--run-name NAME] [--storage PATH] [--verbose]] [--seeds S,S,...]``, ``distgcl embed RUN_DIR
[--graph PATH] [--out FILE]``, ``distgcl datasets`` and ``distgcl generate proteins --scale S
--out DIR [--seed N]``.

Examples::

    distgcl train configs/quickstart.yaml
    distgcl train configs/cora_grace.yaml --set train.epochs=50 --set train.seed=1 --out runs/cora
    distgcl train configs/quickstart.yaml --num-workers 2 --run-name qs --storage runs
    distgcl train configs/cora_grace.yaml --seeds 0,1,2 --out runs/cora-seeds
    distgcl embed runs/cora --graph new_graph.pt --out new_graph_embeddings.npy
    DISTGCL_DATA=../shared/data distgcl datasets
    distgcl generate proteins --scale 1/16 --out data/proteins-16   # then data.root=data/proteins-16

``--num-workers N`` runs the same training on N Ray Train workers (the ``dist:`` config section
holds the same settings plus ``max_failures``, ``checkpoint_every``, ...); the run directory is
``STORAGE/NAME`` and starting the same command again resumes it. Ray's own log lines go to
``STORAGE/NAME/ray.log`` (``--verbose``: to the console too). ``--use-gpu`` without
``--num-workers`` trains single-process on the GPU.

``--seeds 0,1,2`` trains the same config once per training seed (``train.seed``), each a normal
run in ``OUT/seed-S/`` (with ``--num-workers``: ``STORAGE/NAME/seed-S/``), and writes the mean
and std over the training seeds to ``OUT/seeds.json`` (:mod:`distgcl.seeds`) after every seed;
the probe's own ``± std`` is only over the probe seeds of one run (none at all on a fixed split
with the L-BFGS probe). A rerun skips the seeds whose ``result.json`` holds the same config; a
seed that fails is recorded, the others still run (exit code 1 at the end).

Bad input (unknown key, wrong type, out-of-range value, unknown dataset, missing files) prints one
line on stderr and exits with code 2, as do workers the machine or cluster cannot hold. A
diverged or failed run exits with code 1 (a failed distributed run names the rank that failed
first). New knobs belong in the config dataclasses, not in new flags (the flag set is pinned by
a test).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distgcl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a method on a dataset and evaluate it")
    train.add_argument("config", help="YAML config file")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=5")
    train.add_argument("--out", default=None, metavar="DIR",
                       help="output directory (default: runs/<method>-<dataset>-<time>)")
    train.add_argument("--num-workers", type=int, default=None, metavar="N",
                       help="train on N Ray Train workers (dist.num_workers)")
    train.add_argument("--use-gpu", action="store_true", default=None,
                       help="one GPU per worker (dist.use_gpu); without --num-workers: train "
                            "on the GPU")
    train.add_argument("--run-name", default=None, metavar="NAME",
                       help="run folder under the storage path; the same name resumes "
                            "(dist.run_name)")
    train.add_argument("--storage", default=None, metavar="PATH",
                       help="storage path of distributed runs, shared on a cluster "
                            "(dist.storage_path)")
    train.add_argument("--seeds", default=None, metavar="S,S,...",
                       help="one run per training seed (train.seed), e.g. 0,1,2: at least two "
                            "distinct seeds >= 0; each in OUT/seed-S/, mean and std over the "
                            "training seeds in OUT/seeds.json (a rerun skips the seeds whose "
                            "result.json holds the same config)")
    train.add_argument("--verbose", action="store_true",
                       help="with --num-workers: Ray's log lines on the console too (always in "
                            "the run directory's ray.log)")
    embed = sub.add_parser("embed", help="embed a graph with the trained encoder of a run")
    embed.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a distgcl train run")
    embed.add_argument("--graph", default=None, metavar="PATH",
                       help="torch.save'd PyG Data with x and edge_index, same feature width as "
                            "the training graph (default: the run's training graph)")
    embed.add_argument("--out", default=None, metavar="FILE",
                       help="where to write the embeddings: .pt (torch) or .npy (numpy) "
                            "(default: RUN_DIR/embeddings-<graph>.pt)")
    datasets = sub.add_parser("datasets", help="list datasets and whether their files are present")
    datasets.add_argument("--root", default=None, help="data root (default: $DISTGCL_DATA)")
    generate = sub.add_parser("generate", help="write a generated dataset in its real on-disk format")
    generate.add_argument("kind", choices=["proteins"],
                          help="proteins: ogbn-proteins' shape and OGB raw files, loadable as "
                               "data.name=ogbn-proteins with data.root=DIR")
    generate.add_argument("--scale", required=True, metavar="S",
                          help="fraction of ogbn-proteins' nodes and edges, e.g. 1, 0.25 or 1/16")
    generate.add_argument("--out", required=True, metavar="DIR",
                          help="data root to write DIR/ogbn_proteins into")
    generate.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    bench = sub.add_parser("bench", help="benchmarks that ship with distgcl")
    bench_sub = bench.add_subparsers(dest="benchmark", required=True)
    from distgcl.benchmarks.scale import add_arguments

    add_arguments(bench_sub.add_parser(
        "scale", help="time and memory per phase on proteins-shaped graphs against their size "
                      "(resumable sweep; writes scale.json/.csv/.md and plots)"))
    return parser


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"distgcl: error: {message}", file=sys.stderr)
    return code


class _RunFailed(Exception):
    """A run that did not finish: a one-line message and the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def cmd_train(args: argparse.Namespace) -> int:
    from distgcl.seeds import parse_seeds

    try:
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    except ValueError as exc:
        return _fail(str(exc))
    try:
        config = _train_config(args)
        if seeds is not None:
            return _train_seeds(config, seeds, args.out, args.verbose)
        result, where = _train_one(config, args.out, args.verbose)
    except _RunFailed as exc:
        return _fail(str(exc), exc.code)
    _print_result(result, where)
    return 0


def _train_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The config file with its ``--set`` overrides and the ``dist:`` flags, validated."""
    import distgcl.methods  # noqa: F401 - registers the methods' config sections (grace: ...)
    from distgcl.config import ConfigError, load_config

    flags = {"num_workers": args.num_workers, "use_gpu": args.use_gpu,
             "run_name": args.run_name, "storage_path": args.storage}
    try:
        config = load_config(args.config, args.overrides)
        # the flags are the dist: section's fields (taken as given, not parsed as YAML)
        config.dist = dataclasses.replace(config.dist,
                                          **{k: v for k, v in flags.items() if v is not None})
        config.validate()
    except ConfigError as exc:
        raise _RunFailed(str(exc)) from None
    if config.dist.num_workers is None and config.dist.use_gpu:
        import torch

        if not torch.cuda.is_available():
            raise _RunFailed("--use-gpu (dist.use_gpu): no GPU here (torch.cuda.is_available() "
                             "is False); train on the CPU without it")
        config.train.device = "cuda"
    return config


def _train_one(config, out: str | None,  # type: ignore[no-untyped-def]
               verbose: bool = False) -> tuple[dict, str]:
    """One training run, single-process or on ``dist.num_workers`` Ray Train workers:
    ``(result, path of its result.json)``; raises :class:`_RunFailed`."""
    if config.dist.num_workers is not None:
        return _train_distributed(config, out, verbose)
    from distgcl.config import ConfigError
    from distgcl.data import DatasetError
    from distgcl.methods import TrainingDiverged
    from distgcl.train import run_training

    out = out or _default_out(config)
    try:
        result = run_training(config, out)
    except (ConfigError, DatasetError) as exc:
        raise _RunFailed(str(exc)) from None
    except TrainingDiverged as exc:
        raise _RunFailed(f"training diverged: {exc}", EXIT_FAILED) from None
    return result, f"{out}/result.json"


def _default_out(config) -> str:  # type: ignore[no-untyped-def]
    return (f"runs/{config.method}-{config.data.name}-"
            f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}")


def _train_distributed(config, out: str | None,  # type: ignore[no-untyped-def]
                       verbose: bool = False) -> tuple[dict, str]:
    from distgcl.config import ConfigError
    from distgcl.data import DatasetError, missing_files
    from distgcl.data.registry import SPECS, default_root

    spec = SPECS.get(config.data.name)
    if spec is not None and spec.family not in ("generated", "file") and not config.data.download:
        root = Path(config.data.root) if config.data.root else default_root()
        try:
            missing = missing_files(config.data.name, root)
        except DatasetError as exc:
            raise _RunFailed(str(exc)) from None
        if missing:  # checked on the driver: one line instead of N failing workers
            raise _RunFailed(f"dataset {config.data.name!r}: {len(missing)} file(s) missing "
                             f"under {missing[0].parent}: {missing[0].name} ...")
    from distgcl.distributed.trainer import (DistributedTrainingFailed, InfeasibleRequest,
                                             train_distributed)
    from distgcl.methods import TrainingDiverged

    try:
        result = train_distributed(config, out, verbose=verbose)
    except (ConfigError, DatasetError, InfeasibleRequest) as exc:
        raise _RunFailed(str(exc)) from None
    except TrainingDiverged as exc:
        raise _RunFailed(f"training diverged: {exc}", EXIT_FAILED) from None
    except DistributedTrainingFailed as exc:
        raise _RunFailed(f"distributed training failed: {exc} (run directory {exc.run_dir})",
                         EXIT_FAILED) from None
    return result, f"{result['run_dir']}/result.json"


def _seeds_base(config, out: str | None) -> Path:  # type: ignore[no-untyped-def]
    """The folder of a ``--seeds`` run: ``--out`` (single-process default:
    ``runs/<method>-<dataset>-<time>``), or the distributed run directory
    (``STORAGE/NAME``); training seed S goes to its ``seed-S/``."""
    if config.dist.num_workers is None:
        return Path(out or _default_out(config))
    from distgcl.distributed.trainer import resolve_run_dir

    storage, name = resolve_run_dir(config, out)
    return storage / name


def _seed_config(config, seed: int):  # type: ignore[no-untyped-def]
    """``config`` with ``train.seed = seed``; its run directory is given as ``--out``
    (``seed-S/`` of the base), so the ``dist:`` run name and storage are cleared."""
    return dataclasses.replace(
        config, train=dataclasses.replace(config.train, seed=seed),
        dist=dataclasses.replace(config.dist, run_name=None, storage_path=None))


def _train_seeds(config, seeds: list[int], out: str | None,  # type: ignore[no-untyped-def]
                 verbose: bool) -> int:
    """``--seeds``: one normal run per training seed, ``seeds.json`` rewritten after each. A
    seed that fails (exit 1) is recorded and the next one runs; bad input stops at once."""
    from distgcl.seeds import SeedRuns

    runs = SeedRuns(_seeds_base(config, out), seeds)
    code = 0
    for i, seed in enumerate(seeds, 1):
        try:
            _train_seed(runs, _seed_config(config, seed), f"seed {seed} ({i}/{len(seeds)})",
                        verbose)
        except _RunFailed as exc:
            if exc.code == EXIT_BAD_INPUT:  # the same input fails every seed
                raise
            code = _fail(f"training seed {seed}: {exc}", exc.code)
            runs.fail(seed, str(exc))
    print(runs.line())
    print(f"per-seed metrics, mean and std over training seeds: {runs.path}")
    return code


def _train_seed(runs, config, label: str, verbose: bool) -> None:  # type: ignore[no-untyped-def]
    """One training seed of a ``--seeds`` run, skipped where its ``result.json`` already holds
    this config."""
    from distgcl.seeds import finished_result, seed_dir

    seed = config.train.seed
    out = seed_dir(runs.base, seed)
    result, why = finished_result(out, config.to_dict())
    if result is not None:
        print(f"{label}: {why}")
        runs.add(seed, result)
        return
    print(f"{label}: training in {out}" + ("" if why.startswith("no ") else f" ({why})"))
    result, where = _train_one(config, str(out), verbose)
    _print_result(result, where)
    runs.add(seed, result)


def probe_score_text(mean: float, std: float, per_seed: list[float] | None) -> str:
    """The probe score with a spread only where it means something. A fixed (public) split with
    the deterministic L-BFGS probe gives every probe seed the same score: one number repeated,
    so say it is one training run on a fixed split rather than print "± 0.00". Otherwise the
    spread is over the probe seeds (their splits or probe inits) of this one training run; a
    spread over training seeds needs one run per ``--set train.seed=S``."""
    scores = list(per_seed) if per_seed else []
    if len(scores) <= 1 or max(scores) - min(scores) < 1e-9:
        if len(scores) <= 1:
            return f"{mean:.2f} (a single training run and one probe seed: no spread)"
        return (f"{mean:.2f} (a single training run on a fixed split: the {len(scores)} probe "
                f"seeds all score the same, no spread)")
    return f"{mean:.2f} ± {std:.2f} (spread over {len(scores)} probe seeds of one training run)"


def _print_result(result: dict, where: str) -> None:
    m = result["metrics"]
    if "linear_probe" in m.get("skipped", {}):
        line = f"linear probe skipped: {m['skipped']['linear_probe']}"
    elif "accuracy_mean" in m:
        line = "linear-probe accuracy: " + probe_score_text(
            m["accuracy_mean"], m["accuracy_std"], m.get("accuracy_per_seed"))
        if "nmi" in m:
            line += f" | NMI {m['nmi']:.4f} ARI {m['ari']:.4f} FMI {m['fmi']:.4f}"
    else:
        line = "linear-probe ROC-AUC: " + probe_score_text(
            m["rocauc_mean"], m["rocauc_std"], m.get("rocauc_per_seed"))
    workers = result.get("world_size", 1)
    print(f"{result['method']} on {result['dataset']}: {line}")
    print(f"{result['timing']['seconds_per_epoch']:.3f} s/epoch, "
          + (f"{workers} workers, " if workers > 1 else "")
          + f"peak RSS {result['memory']['peak_rss_mb']:.0f} MB; results in {where}")
    files = result.get("outputs", {}).get("embeddings")
    if files:
        run_dir = Path(where).parent
        shape = "x".join(str(v) for v in result["outputs"]["embedding_shape"])
        print(f"embeddings ({shape}): {', '.join(str(run_dir / f) for f in files)}; "
              f"encoder: {run_dir / 'encoder.pt'}")


def cmd_embed(args: argparse.Namespace) -> int:
    from distgcl.config import ConfigError
    from distgcl.data import DatasetError
    from distgcl.export import ExportError, embed_graph

    try:
        path, z = embed_graph(args.run_dir, args.graph, args.out)
    except (ExportError, DatasetError, ConfigError) as exc:
        return _fail(str(exc))
    print(f"embedded {z.size(0)} nodes ({z.size(1)} dims) with the encoder of {args.run_dir}: "
          f"{path}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from distgcl.data import SPECS, default_root, missing_files

    root = Path(args.root) if args.root else default_root()
    print(f"data root: {root}")
    for name, spec in SPECS.items():
        if spec.family == "generated":
            status = "generated (no files needed)"
        elif spec.family == "file":
            status = "your file (data.path)"
        else:
            missing = missing_files(name, root)
            status = ("present" if not missing else
                      f"missing ({len(missing)} file(s) under {root / spec.raw_dir})")
        print(f"  {name:<14} {status:<50} {spec.description}")
    return 0


def _parse_scale(text: str) -> float:
    from fractions import Fraction

    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--scale must be a number or a fraction like 1/16 (got {text!r})") from None
    if value <= 0:
        raise ValueError(f"--scale must be > 0 (got {text})")
    return value


def cmd_generate(args: argparse.Namespace) -> int:
    import json
    import time

    from distgcl.data import DatasetError
    from distgcl.data.proteins import DATASET_DIR, MANIFEST, generate_proteins

    try:
        scale = _parse_scale(args.scale)
    except ValueError as exc:
        return _fail(str(exc))
    existed = (Path(args.out) / DATASET_DIR).exists()
    start = time.perf_counter()
    try:
        path = generate_proteins(args.out, scale, args.seed)
    except DatasetError as exc:
        return _fail(str(exc))
    info = json.loads((path / MANIFEST).read_text())
    done = "already there" if existed else f"written in {time.perf_counter() - start:.1f} s"
    print(f"{path}: {info['num_nodes']:,} nodes, {info['num_edges']:,} undirected edges "
          f"(scale {scale:g}, seed {args.seed}), {done}; "
          f"load it with data.name=ogbn-proteins data.root={args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from distgcl.benchmarks.scale import run_sweep, sweep_from_args

    try:
        sweep = sweep_from_args(args)
    except ValueError as exc:
        return _fail(str(exc))
    command = " ".join(shlex.quote(a) for a in ["distgcl", *sys.argv[1:]])
    paths = run_sweep(sweep, restart=args.restart, command=command,
                      report_only=args.report_only)
    print("distgcl bench scale: " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    if args.command == "embed":
        return cmd_embed(args)
    if args.command == "generate":
        return cmd_generate(args)
    if args.command == "bench":
        return cmd_bench(args)
    return cmd_datasets(args)


if __name__ == "__main__":
    sys.exit(main())
