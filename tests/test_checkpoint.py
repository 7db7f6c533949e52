"""Checkpoints: checksums, the fallback past a damaged newest checkpoint, unique temp names,
and exact mid-epoch resumes of the one training loop (single process; Ray: tests/distributed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distgcl.checkpoint import CheckpointManager, CorruptCheckpoint, read_step_dir
from distgcl.cli import main

REPO = Path(__file__).resolve().parents[1]
NML_MINI = ["method=nml", "model.proj_dim=0", "model.out_dim=16", "model.hidden_dim=16",
            "model.activation=rrelu", "model.activate_last=false", "nml.mode=minibatch",
            "nml.batch_size=64", "nml.num_negatives=48", "nml.num_neighbors=[5,5]",
            "nml.inner_steps=2", "data.csbm.num_nodes=300", "data.csbm.num_features=16",
            "train.progress=false", "eval.probe_seeds=2", "eval.probe_epochs=50",
            "eval.clustering_runs=1"]


def test_manager_checksum_and_fallback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    m = CheckpointManager(tmp_path, keep_latest_k=3)
    for step in (2, 4, 6):
        m.save(step, {"step": step, "w": torch.full((50,), float(step))})
    assert m.steps() == [2, 4, 6]
    assert m.load()["step"] == 6
    state = tmp_path / "step-6" / "state.pt"
    state.write_bytes(state.read_bytes()[:-7])  # truncated
    with pytest.raises(CorruptCheckpoint, match="truncated"):
        read_step_dir(tmp_path / "step-6")
    assert m.load()["step"] == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step-6" in err and "resuming from step-4" in err
    data = bytearray((tmp_path / "step-4" / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, flipped bits
    (tmp_path / "step-4" / "state.pt").write_bytes(bytes(data))
    assert m.load()["step"] == 2
    assert not list(tmp_path.rglob("*.tmp-*"))  # no temp file left behind
    m.save(8, {"step": 8})  # purge keeps the newest three complete ones
    assert m.steps() == [4, 6, 8]


def _run(out: Path, *extra: str) -> dict:
    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(out)]
    for item in [*NML_MINI, *extra]:
        args += ["--set", item]
    assert main(args) == 0
    return json.loads((out / "result.json").read_text())


def _losses(out: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["loss"], r["loss_nmn"]) for r in rows]


def test_mid_epoch_resume_reproduces_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    """300 nodes / batch 64 = 5 steps per epoch; checkpoints every 3 steps fall mid-epoch."""
    full = _run(tmp_path / "full", "train.epochs=3", "train.checkpoint_every=3")
    # the resumed run dies right after step 7 (mid-epoch 2; newest checkpoint: step 6)
    monkeypatch.setenv("DISTGCL_FAIL_AT", "0:7")
    monkeypatch.setattr("os._exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit):
        _run(tmp_path / "resumed", "train.epochs=3", "train.checkpoint_every=3")
    monkeypatch.delenv("DISTGCL_FAIL_AT")
    assert CheckpointManager(tmp_path / "resumed" / "checkpoints").steps() == [3, 6]
    assert len(_losses(tmp_path / "resumed")) == 1  # epoch 1 only; epoch 2 was cut short
    resumed = _run(tmp_path / "resumed", "train.epochs=3", "train.checkpoint_every=3")
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")  # each epoch once
    assert resumed["metrics"]["accuracy_mean"] == full["metrics"]["accuracy_mean"]


def test_resume_past_a_damaged_newest_checkpoint(tmp_path: Path, capsys) -> None:
    """The resume from step 8 (mid-epoch 2) past a truncated step 10 reproduces the
    uninterrupted 3-epoch run: the same per-epoch losses, embeddings and accuracy."""
    full = _run(tmp_path / "full", "train.epochs=3", "train.checkpoint_every=2")
    _run(tmp_path / "a", "train.epochs=2", "train.checkpoint_every=2")
    newest = tmp_path / "a" / "checkpoints" / "step-10" / "state.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    resumed = _run(tmp_path / "a", "train.epochs=3", "train.checkpoint_every=2")
    err = capsys.readouterr().err
    assert "step-10" in err and "resuming from step-8" in err and "Traceback" not in err
    resumes = [json.loads(line) for line in (tmp_path / "a" / "resumes.jsonl").read_text()
               .splitlines()]
    assert [r["from_step"] for r in resumes] == [8]
    assert _losses(tmp_path / "a") == _losses(tmp_path / "full")  # epoch 2 from its partial sums
    z_full, z_resumed = (torch.load(d / "embeddings.pt") for d in (tmp_path / "full",
                                                                   tmp_path / "a"))
    assert torch.equal(z_full, z_resumed)
    assert resumed["metrics"]["accuracy_mean"] == full["metrics"]["accuracy_mean"]
