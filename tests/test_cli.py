"""The CLI contract: outputs, determinism, resume, and one-line errors with exit code 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from distgcl.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TINY = ["data.csbm.num_nodes=300", "data.csbm.num_features=16", "model.out_dim=16",
        "model.proj_dim=16", "train.epochs=4", "train.progress=false", "eval.probe_seeds=3",
        "eval.probe_epochs=100", "eval.clustering_runs=1"]


def _train(tmp: Path, *extra: str) -> dict:
    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(tmp)]
    for item in [*TINY, *extra]:
        args += ["--set", item]
    assert main(args) == 0
    return json.loads((tmp / "result.json").read_text())


def test_train_writes_contract_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = _train(tmp_path)
    assert "linear-probe accuracy" in capsys.readouterr().out
    for key in ("method", "dataset", "seed", "config", "metrics", "timing", "memory"):
        assert key in result
    for key in ("accuracy_mean", "accuracy_std", "nmi", "ari", "fmi"):
        assert isinstance(result["metrics"][key], float)
    assert set(result["timing"]) >= {"train_seconds", "seconds_per_epoch"}
    assert result["memory"]["peak_rss_mb"] > 0
    assert result["memory"]["training_extra_mb"] >= 0  # the training phase's own footprint
    assert result["config"]["train"]["epochs"] == 4
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {"epoch", "loss", "seconds"} <= set(json.loads(lines[0]))
    assert (tmp_path / "training_curve.png").stat().st_size > 1000


def test_same_seed_same_metrics_other_seed_differs(tmp_path: Path) -> None:
    a = _train(tmp_path / "a", "train.seed=3")["metrics"]
    b = _train(tmp_path / "b", "train.seed=3")["metrics"]
    c = _train(tmp_path / "c", "train.seed=4")["metrics"]
    keys = ("accuracy_mean", "accuracy_std", "nmi", "ari", "fmi")
    assert all(a[k] == b[k] for k in keys)
    assert any(a[k] != c[k] for k in keys)


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    full = _train(tmp_path / "full", "train.epochs=6", "train.checkpoint_every=2")
    # "killed" after epoch 4: run only 4 epochs, then rerun the 6-epoch job in the same folder
    _train(tmp_path / "resumed", "train.epochs=4", "train.checkpoint_every=2")
    resumed = _train(tmp_path / "resumed", "train.epochs=6", "train.checkpoint_every=2")
    losses = [json.loads(l)["loss"] for l in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    again = [json.loads(l)["loss"] for l in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert losses == again
    assert full["metrics"]["accuracy_mean"] == resumed["metrics"]["accuracy_mean"]


BAD_INPUTS = [
    (["--set", "train.epochs=0"], "train.epochs must be >= 1"),
    (["--set", "train.lr=0"], "train.lr must be > 0"),
    (["--set", "train.epochs=five"], "train.epochs must be an integer"),
    (["--set", "train.epoch=5"], "unknown config key 'train.epoch'"),
    (["--set", "augment.edge_drop_1=1.5"], "augment.edge_drop_1 must be in [0, 1)"),
    (["--set", "augment.feature_mask_1=1"], "augment.feature_mask_1 must be in [0, 1)"),
    (["--set", "data.name=imagenet"], "unknown dataset 'imagenet'; valid names: cora"),
    (["--set", "data.name=cora", "--set", "data.root=/nonexistent"],
     "file(s) missing under /nonexistent/Planetoid/Cora/raw: ind.cora.x"),
    (["--set", "data.name=ogbn-proteins", "--set", "data.root=/nonexistent"],
     "missing under /nonexistent/ogbn_proteins"),
    (["--set", "noequals"], "--set expects KEY=VALUE"),
    (["--set", "dist.shards=2"], "dist.shards needs --num-workers N"),
]


@pytest.mark.parametrize("extra, message", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                          extra: list[str], message: str) -> None:
    code = main(["train", str(REPO / "configs/quickstart.yaml"), "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def _one_error_line(err: str, message: str) -> None:
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_use_gpu_without_workers_trains_on_the_gpu_or_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(tmp_path), "--use-gpu"]
    for item in TINY:
        args += ["--set", item]
    code = main(args)
    if torch.cuda.is_available():
        assert code == 0
        result = json.loads((tmp_path / "result.json").read_text())
        assert result["config"]["train"]["device"] == "cuda"
    else:
        assert code == 2
        _one_error_line(capsys.readouterr().err, "--use-gpu (dist.use_gpu): no GPU here")
        assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--storage", "/proc/nope"], "cannot create the run directory /proc/nope/"),
    (["--set", "method=e2neg", "--set", "dist.shards=2"],
     "dist.shards needs a block eigensolver: e2neg.solver must be one of"),
])
def test_distributed_bad_input_is_found_before_ray_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    ray = pytest.importorskip("ray")
    storage = [] if "--storage" in extra else ["--storage", str(tmp_path)]
    code = main(["train", str(REPO / "configs/quickstart.yaml"), "--num-workers", "2",
                 "--run-name", "bad", *storage, *extra])
    assert code == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not ray.is_initialized()  # nothing started


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_console_script_end_to_end(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it (a real subprocess)."""
    bad = subprocess.run([sys.executable, "-m", "distgcl.cli", "train",
                          str(REPO / "configs/quickstart.yaml"), "--set", "train.lr=-1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    listing = subprocess.run([sys.executable, "-m", "distgcl.cli", "datasets", "--root",
                              str(tmp_path)], capture_output=True, text=True)
    assert listing.returncode == 0
    for name in ("cora", "citeseer", "pubmed", "photo", "computers", "cs", "physics",
                 "ogbn-arxiv", "ogbn-proteins", "csbm", "file"):
        assert f"  {name} " in listing.stdout
    assert "missing" in listing.stdout


def test_datasets_reports_present_files(shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets", "--root", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "cora" in out and "present" in out


def test_cli_flag_set_is_pinned() -> None:
    """New knobs go into config dataclasses, not new flags (torchtitan's frozen-CLI rule)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    flags = {name: sorted(o for a in p._actions for o in a.option_strings)
             for name, p in sub.choices.items()}
    assert flags == {"train": ["--help", "--num-workers", "--out", "--run-name", "--seeds",
                               "--set", "--storage", "--use-gpu", "--verbose", "-h"],
                     "embed": ["--graph", "--help", "--out", "-h"],
                     "datasets": ["--help", "--root", "-h"],
                     "generate": ["--help", "--out", "--scale", "--seed", "-h"],
                     "bench": ["--help", "-h"]}
