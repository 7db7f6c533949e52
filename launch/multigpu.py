#!/usr/bin/env python
"""Train on every GPU of one machine: one Ray Train worker per GPU (NCCL), a local Ray.

    python launch/multigpu.py configs/pubmed_nml.yaml [--gpus N] [--run-name NAME]
        [--storage runs] [--set KEY=VALUE ...]

is ``distgcl train CONFIG --num-workers N --use-gpu --run-name NAME --storage PATH`` with N the
number of visible GPUs (``CUDA_VISIBLE_DEVICES`` restricts them). Without a GPU it says so and
exits 2; ``distgcl train CONFIG --num-workers N`` runs CPU workers instead. Rerunning the same
command (same run name) resumes the run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--gpus", type=int, default=None, help="default: all visible GPUs")
    parser.add_argument("--run-name", default=None)
    parser.add_argument("--storage", default="runs")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    available = torch.cuda.device_count()
    gpus = args.gpus if args.gpus is not None else available
    if available == 0 or not 1 <= gpus <= available:
        print(f"multigpu: error: {gpus} GPU(s) requested, {available} visible "
              "(for CPU workers: distgcl train CONFIG --num-workers N)", file=sys.stderr)
        return 2
    name = args.run_name or f"multigpu-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    from distgcl.cli import main as distgcl_main

    cli = ["train", args.config, "--num-workers", str(gpus), "--use-gpu", "--run-name", name,
           "--storage", args.storage]
    for item in args.overrides:
        cli += ["--set", item]
    print("+ distgcl " + " ".join(cli), flush=True)
    return distgcl_main(cli)


if __name__ == "__main__":
    sys.exit(main())
