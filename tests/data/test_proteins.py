"""The ogbn-proteins-shaped generator, through the real ogb loader; node features; references."""
import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.utils import subgraph

from distgcl.cli import main
from distgcl.data import DatasetError, load_dataset
from distgcl.data import proteins as P
from distgcl.data.proteins import generate_proteins, proteins_size

TINY = {"num_nodes": 600, "num_edges": 15_000, "chunk_edges": 4_000, "progress": False}
FILES = ["raw/edge.csv.gz", "raw/edge-feat.csv.gz", "raw/num-node-list.csv.gz",
         "raw/num-edge-list.csv.gz", "raw/node-label.csv.gz", "raw/node_species.csv.gz",
         "split/species/train.csv.gz", "split/species/valid.csv.gz", "split/species/test.csv.gz",
         "RELEASE_v1.txt"]


def _rows(path: Path) -> list[list[str]]:
    """Parse a gzip CSV by hand (independent of pandas, which ogb uses)."""
    with gzip.open(path, "rt") as fh:
        return [line.rstrip("\n").split(",") for line in fh]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("proteins")
    generate_proteins(root, seed=3, **TINY)
    return root


@pytest.fixture(scope="module")
def raw(tiny: Path) -> dict:
    base = tiny / "ogbn_proteins"
    edges = np.array(_rows(base / "raw/edge.csv.gz"), dtype=np.int64)
    feat_text = _rows(base / "raw/edge-feat.csv.gz")
    return {"edges": edges, "feat_text": feat_text,
            "feats": np.array(feat_text, dtype=np.float64),
            "labels": np.array(_rows(base / "raw/node-label.csv.gz"), dtype=np.int64),
            "species": np.array(_rows(base / "raw/node_species.csv.gz"), dtype=np.int64)[:, 0],
            "split": {name: np.array(_rows(base / f"split/species/{name}.csv.gz"),
                                     dtype=np.int64)[:, 0] for name in ("train", "valid", "test")}}


def test_raw_files_have_ogbs_layout_and_shape(tiny: Path, raw: dict) -> None:
    base = tiny / "ogbn_proteins"
    for f in FILES:
        assert (base / f).is_file(), f
    n, m = TINY["num_nodes"], TINY["num_edges"]
    assert _rows(base / "raw/num-node-list.csv.gz") == [[str(n)]]
    assert _rows(base / "raw/num-edge-list.csv.gz") == [[str(m)]]
    edges = raw["edges"]
    assert edges.shape == (m, 2) and edges.min() >= 0 and edges.max() < n
    assert (edges[:, 0] != edges[:, 1]).all()  # no self-loops
    assert len({(min(a, b), max(a, b)) for a, b in edges.tolist()}) == m  # each edge once
    assert raw["feats"].shape == (m, 8)
    assert raw["feats"].min() >= 0 and raw["feats"].max() <= 1
    assert all(len(v) == 5 and v[1] == "." for row in raw["feat_text"][:500] for v in row)
    assert (raw["feats"] > 0).mean() > 0.05  # not all zero
    assert raw["labels"].shape == (n, 112) and set(np.unique(raw["labels"])) == {0, 1}
    assert raw["species"].shape == (n,) and len(np.unique(raw["species"])) == 8


def test_loads_through_ogb_with_species_split(tiny: Path, raw: dict, tmp_path: Path) -> None:
    ds = load_dataset("ogbn-proteins", tiny, cache=tmp_path / "cache")
    d, n, m = ds.data, TINY["num_nodes"], TINY["num_edges"]
    assert ds.multilabel and ds.num_classes == 112 and ds.split == "species"
    assert d.num_nodes == n and d.edge_index.shape == (2, 2 * m) and d.y.shape == (n, 112)
    assert d.x.shape == (n, 8 + 8)  # default: sum + mean
    assert torch.equal(d.y.long(), torch.from_numpy(raw["labels"]))
    masks = torch.stack([d.train_mask, d.val_mask, d.test_mask])
    assert torch.equal(masks.sum(0), torch.ones(n, dtype=torch.long))  # disjoint and covering
    species = torch.from_numpy(raw["species"])
    parts = [set(species[mask].tolist()) for mask in masks]
    assert [len(p) for p in parts] == [6, 1, 1]  # whole species held out
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for mask in masks:  # every task has both classes in every split
        positives = d.y[mask].sum(0)
        assert (positives > 0).all() and (positives < int(mask.sum())).all()
    rates = d.y.mean(0)
    assert 0.005 < float(rates.min()) and float(rates.max()) < 0.6


def test_split_sizes_follow_the_real_split_at_scale_one() -> None:
    sizes = P._species_sizes(P.PROTEINS_NODES)
    assert sizes.sum() == 132_534 and len(sizes) == 8
    assert (int(sizes[:6].sum()), int(sizes[6]), int(sizes[7])) == (86_619, 21_236, 24_679)
    assert proteins_size(1.0) == (132_534, 39_561_252)
    assert proteins_size(1 / 16) == (8_283, 2_472_578)


@pytest.mark.parametrize("how", ["sum", "mean", "sum+mean", "sum+mean+species"])
def test_node_features_match_independent_computation(tiny: Path, raw: dict, tmp_path: Path,
                                                     how: str) -> None:
    n = TINY["num_nodes"]
    ds = load_dataset("ogbn-proteins", tiny, cache=tmp_path / "cache", proteins_node_features=how)
    total, degree = np.zeros((n, 8)), np.zeros(n)
    for (a, b), f in zip(raw["edges"], raw["feats"]):  # every undirected edge counts at both ends
        total[a] += f
        total[b] += f
        degree[a] += 1
        degree[b] += 1
    ids = sorted(set(raw["species"].tolist()))
    onehot = np.array([[float(s == i) for i in ids] for s in raw["species"]])
    parts = {"sum": total, "mean": total / np.maximum(degree, 1)[:, None], "species": onehot}
    expected = np.concatenate([parts[p] for p in how.split("+")], axis=1)
    assert ds.data.x.shape == expected.shape
    np.testing.assert_allclose(ds.data.x.numpy(), expected, rtol=1e-5, atol=1e-4)


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = generate_proteins(tmp_path / "again", seed=3, **TINY)
    other = generate_proteins(tmp_path / "other", seed=4, **TINY)
    for f in FILES:
        assert (again / f).read_bytes() == (tiny / "ogbn_proteins" / f).read_bytes(), f
    for f in ("raw/edge.csv.gz", "raw/edge-feat.csv.gz", "raw/node-label.csv.gz"):
        assert (other / f).read_bytes() != (again / f).read_bytes(), f


def test_existing_dataset_is_kept_or_refused(tiny: Path) -> None:
    base = tiny / "ogbn_proteins"
    before = (base / "raw/edge.csv.gz").stat().st_mtime_ns
    assert generate_proteins(tiny, seed=3, **TINY) == base
    assert (base / "raw/edge.csv.gz").stat().st_mtime_ns == before  # not rewritten
    with pytest.raises(DatasetError, match="already exists and is not this dataset"):
        generate_proteins(tiny, seed=5, **TINY)


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, real = [], P.format_milli_rows

    def fail_on_third_chunk(milli: np.ndarray) -> bytes:  # a fault injected into the real writer
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(milli)

    monkeypatch.setattr(P, "format_milli_rows", fail_on_third_chunk)
    with pytest.raises(OSError, match="disk full"):
        generate_proteins(tmp_path, **TINY)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder


def test_killed_write_leaves_no_complete_looking_dataset(tmp_path: Path) -> None:
    """A real SIGKILL in the middle of writing: no ogbn_proteins, the loader says files missing,
    and the next run removes the dead run's temporary folder."""
    code = ("from distgcl.data.proteins import generate_proteins; "
            f"generate_proteins({str(tmp_path)!r}, num_nodes=15_000, num_edges=2_000_000, "
            "chunk_edges=100_000, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            partial = list(tmp_path.glob(".ogbn_proteins.tmp-*/raw/edge-feat.csv.gz"))
            if partial and partial[0].stat().st_size > 0:
                break
            assert proc.poll() is None, "generator ended before it could be interrupted"
            time.sleep(0.05)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "ogbn_proteins").exists()
    assert len(list(tmp_path.glob(".ogbn_proteins.tmp-*"))) == 1
    with pytest.raises(DatasetError, match="missing"):
        load_dataset("ogbn-proteins", tmp_path, cache=tmp_path / "cache")
    generate_proteins(tmp_path, **TINY)
    assert list(tmp_path.glob(".ogbn_proteins.tmp-*")) == []
    assert (tmp_path / "ogbn_proteins" / "RELEASE_v1.txt").is_file()


def test_regenerated_dataset_is_not_loaded_stale(tmp_path: Path) -> None:
    import shutil

    first = load_dataset("ogbn-proteins", generate_proteins(tmp_path / "d", seed=0, **TINY).parent,
                         cache=tmp_path / "cache")
    shutil.rmtree(tmp_path / "d" / "ogbn_proteins")
    generate_proteins(tmp_path / "d", seed=1, **TINY)
    second = load_dataset("ogbn-proteins", tmp_path / "d", cache=tmp_path / "cache")
    labels = np.array(_rows(tmp_path / "d/ogbn_proteins/raw/node-label.csv.gz"), dtype=np.int64)
    assert torch.equal(second.data.y.long(), torch.from_numpy(labels))
    assert not torch.equal(first.data.y, second.data.y)


def test_bad_sizes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DatasetError, match="half of all pairs"):
        generate_proteins(tmp_path, num_nodes=100, num_edges=5000)
    for scale, message in (("0", "--scale must be > 0"), ("abc", "--scale must be a number"),
                           ("1/3000", "at least 64 nodes"),
                           ("1/200", "needs scale >= 0.009")):
        assert main(["generate", "proteins", "--scale", scale, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err


def test_cli_generate_writes_a_loadable_dataset(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "proteins", "--scale", "1/100", "--out", str(tmp_path),
                 "--seed", "2"]) == 0
    assert "1,325 nodes, 395,613 undirected edges" in capsys.readouterr().out
    ds = load_dataset("ogbn-proteins", tmp_path, cache=tmp_path / "cache")
    assert ds.data.edge_index.size(1) == 2 * 395_613
    assert main(["generate", "proteins", "--scale", "0.01", "--out", str(tmp_path),
                 "--seed", "2"]) == 0
    assert "already there" in capsys.readouterr().out
