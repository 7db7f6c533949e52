"""The console's probe line: a spread only where one exists (issue 20 item 4)."""
import json
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from distgcl.cli import main, probe_score_text

REPO = Path(__file__).resolve().parents[1]


def test_identical_probe_seeds_are_one_run_not_a_spread() -> None:
    text = probe_score_text(78.7, 0.0, [78.7] * 10)
    assert "±" not in text and "single training run on a fixed split" in text
    assert "10 probe seeds all score the same" in text


def test_varying_probe_seeds_show_their_spread_and_scope() -> None:
    text = probe_score_text(80.0, 0.5, [79.5, 80.0, 80.5])
    assert text.startswith("80.00 ± 0.50") and "3 probe seeds of one training run" in text
    assert "±" not in probe_score_text(80.0, 0.0, [80.0])  # one seed: no spread either


def _fixed_split_graph(path: Path) -> None:
    """A two-class graph with fixed masks: every probe seed gets the same split."""
    gen = torch.Generator().manual_seed(0)
    n = 120
    y = (torch.arange(n) % 2)
    x = torch.randn(n, 8, generator=gen) + 2.0 * y[:, None].float()
    src = torch.randint(0, n, (600,), generator=gen)
    dst = torch.randint(0, n, (600,), generator=gen)
    masks = {k: torch.zeros(n, dtype=torch.bool) for k in ("train", "val", "test")}
    masks["train"][:40], masks["val"][40:70], masks["test"][70:] = True, True, True
    torch.save(Data(x=x, edge_index=torch.stack([src, dst]), y=y,
                    **{f"{k}_mask": v for k, v in masks.items()}), path)


def test_console_on_a_fixed_split_says_single_run(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    _fixed_split_graph(tmp_path / "graph.pt")
    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(tmp_path / "run")]
    for item in ("data.name=file", f"data.path={tmp_path / 'graph.pt'}", "model.out_dim=16",
                 "model.proj_dim=16", "train.epochs=2", "train.progress=false",
                 "eval.probe_seeds=4", "eval.clustering_runs=1"):
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    scores = json.loads((tmp_path / "run/result.json").read_text())["metrics"]["accuracy_per_seed"]
    assert len(set(scores)) == 1  # the premise: fixed split + deterministic L-BFGS probe
    assert "single training run on a fixed split" in out and "± 0.00" not in out
