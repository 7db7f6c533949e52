import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from distgcl.data import DatasetError, load_dataset
from distgcl.data.ogb_fabricate import fabricate_ogbn_proteins


def test_cora_public_split(shared_data: Path, cache_dir: Path) -> None:
    ds = load_dataset("cora", shared_data, cache=cache_dir)
    d = ds.data
    assert d.num_nodes == 2708
    assert d.edge_index.size(1) == 10556
    assert ds.num_classes == 7 and not ds.multilabel
    assert (int(d.train_mask.sum()), int(d.val_mask.sum()), int(d.test_mask.sum())) == (140, 500, 1000)
    assert ds.fixed_split and ds.split_masks(0).train.equal(ds.split_masks(5).train)


def test_read_only_root_is_never_written(shared_data: Path, tmp_path: Path) -> None:
    src = tmp_path / "ro"
    shutil.copytree(shared_data / "Planetoid" / "Cora", src / "Planetoid" / "Cora")
    for p in sorted(src.rglob("*"), reverse=True) + [src]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = sorted(str(p) for p in src.rglob("*"))
    ds = load_dataset("cora", src, cache=tmp_path / "cache")
    assert ds.data.num_nodes == 2708
    assert sorted(str(p) for p in src.rglob("*")) == before
    assert any((tmp_path / "cache").rglob("processed"))
    for p in [src, *src.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_random_split_datasets_are_seeded(shared_data: Path, cache_dir: Path) -> None:
    ds = load_dataset("photo", shared_data, cache=cache_dir)
    assert ds.data.num_nodes == 7650 and ds.num_classes == 8
    a, b, c = ds.split_masks(0), ds.split_masks(0), ds.split_masks(1)
    assert a.train.equal(b.train) and not a.train.equal(c.train)
    assert int(a.train.sum()) == 765 and int(a.val.sum()) == 765
    assert not (a.train & a.test).any() and int((a.train | a.val | a.test).sum()) == 7650


def test_fabricated_ogbn_proteins_goes_through_ogb(tmp_path: Path) -> None:
    fabricate_ogbn_proteins(tmp_path / "ogb", num_nodes=200, num_edges=900)
    ds = load_dataset("ogbn-proteins", tmp_path / "ogb", cache=tmp_path / "cache",
                      proteins_node_features="mean")
    d = ds.data
    assert ds.multilabel and ds.num_classes == 112 and d.y.shape == (200, 112)
    assert ds.split == "species"
    # species split: whole species per part, parts disjoint and covering every node
    species = torch.tensor([int(line) for line in _gz_lines(tmp_path / "ogb/ogbn_proteins/raw/node_species.csv.gz")])
    for m in (d.train_mask, d.val_mask, d.test_mask):
        assert m.any()
    assert len(set(species[d.test_mask].tolist()) & set(species[d.train_mask].tolist())) == 0
    assert int((d.train_mask.int() + d.val_mask.int() + d.test_mask.int()).max()) == 1
    # node features are the mean of the node's edge features (ogb adds reverse edges)
    assert d.x.shape == (200, 8)
    edges = [tuple(map(int, l.split(","))) for l in _gz_lines(tmp_path / "ogb/ogbn_proteins/raw/edge.csv.gz")]
    feats = torch.tensor([list(map(float, l.split(","))) for l in _gz_lines(tmp_path / "ogb/ogbn_proteins/raw/edge-feat.csv.gz")])
    dst = torch.tensor([e[1] for e in edges] + [e[0] for e in edges])
    expected = scatter(torch.cat([feats, feats]), dst, dim=0, dim_size=200, reduce="mean")
    assert torch.allclose(d.x, expected, atol=1e-5)
    # second load hits the processed cache
    again = load_dataset("ogbn-proteins", tmp_path / "ogb", cache=tmp_path / "cache",
                         proteins_node_features="mean")
    assert again.data.edge_index.equal(d.edge_index)


def _gz_lines(path: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt") as fh:
        return [l.strip() for l in fh if l.strip()]


def test_missing_files_error_names_them(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"ind\.cora\.x.*Planetoid/Cora/raw|Planetoid/Cora/raw.*ind\.cora\.x"):
        load_dataset("cora", tmp_path)
    with pytest.raises(DatasetError, match="ogbn_proteins"):
        load_dataset("ogbn-proteins", tmp_path)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DatasetError, match="valid names: cora, citeseer"):
        load_dataset("imagenet")


def test_csbm_is_homophilous_and_seeded() -> None:
    from distgcl.config import CSBMConfig

    cfg = CSBMConfig(num_nodes=500, num_classes=3, homophily=0.9, avg_degree=8)
    a = load_dataset("csbm", seed=1, csbm=cfg).data
    b = load_dataset("csbm", seed=1, csbm=cfg).data
    c = load_dataset("csbm", seed=2, csbm=cfg).data
    assert a.edge_index.equal(b.edge_index) and not a.edge_index.equal(c.edge_index)
    same = (a.y[a.edge_index[0]] == a.y[a.edge_index[1]]).float().mean()
    assert 0.85 < float(same) < 0.95
    assert a.is_undirected() and not a.has_self_loops()


def test_user_file_dataset(tmp_path: Path) -> None:
    data = Data(x=torch.randn(6, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]),
                y=torch.tensor([0, 1, 0, 1, 0, 1]))
    torch.save(data, tmp_path / "g.pt")
    ds = load_dataset("file", path=str(tmp_path / "g.pt"))
    assert ds.num_classes == 2 and ds.data.num_nodes == 6 and not ds.fixed_split
    assert ds.split_masks(0).train.sum() == 1  # y without masks: the seeded random 1:1:8 split
    torch.save({"x": torch.randn(3, 2)}, tmp_path / "bad.pt")
    with pytest.raises(DatasetError, match="no 'edge_index'"):
        load_dataset("file", path=str(tmp_path / "bad.pt"))


def test_user_file_without_labels(tmp_path: Path) -> None:
    x = torch.rand(5, 3)
    torch.save({"x": x, "edge_index": torch.tensor([[0, 1, 3], [1, 0, 4]])}, tmp_path / "g.pt")
    ds = load_dataset("file", path=str(tmp_path / "g.pt"), normalize_features=True)
    assert not ds.has_labels and ds.split == "none" and not ds.fixed_split
    assert ds.num_classes == 0 and not ds.multilabel and "y" not in ds.data
    assert ds.data.num_nodes == 5 and torch.allclose(ds.data.x, x / x.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="no labels"):
        ds.split_masks(0)
    unnormalized = load_dataset("file", path=str(tmp_path / "g.pt"))
    assert torch.equal(unnormalized.data.x, x)


def test_log_and_standardized_features(tmp_path) -> None:
    x = torch.tensor([[0.0, 3.0], [599.0, 0.5]])
    path = tmp_path / "g.pt"
    torch.save(Data(x=x, edge_index=torch.tensor([[0, 1], [1, 0]])), path)
    got = load_dataset("file", path=str(path), log_features=True).data.x
    assert torch.allclose(got, torch.tensor([[0.0, 1.3862944], [6.3969297, 0.4054651]]))
    both = load_dataset("file", path=str(path), log_features=True, normalize_features=True).data.x
    assert torch.allclose(both, got / got.sum(1, keepdim=True))  # log first, then rows
    std = load_dataset("file", path=str(path), log_features=True,
                       standardize_features=True).data.x
    assert torch.allclose(std, (got - got.mean(0)) / got.std(0))
    assert torch.allclose(std.mean(0), torch.zeros(2), atol=1e-6)
    torch.save(Data(x=-x, edge_index=torch.tensor([[0, 1], [1, 0]])), path)
    with pytest.raises(DatasetError, match="non-negative"):
        load_dataset("file", path=str(path), log_features=True)


def test_normalize_features_with_negative_entries(tmp_path: Path) -> None:
    # real-valued features whose rows nearly cancel: a plain division by the row sum gives ~1e10
    x = torch.randn(40, 6)
    x[:, -1] = -x[:, :-1].sum(1) + 1e-9
    torch.save(Data(x=x, edge_index=torch.tensor([[0, 1], [1, 0]])), tmp_path / "g.pt")
    got = load_dataset("file", path=str(tmp_path / "g.pt"), normalize_features=True).data.x
    assert torch.isfinite(got).all() and got.min() >= 0 and got.max() <= 1
    assert torch.allclose(got.sum(1), torch.ones(40))
    shifted = x - x.min()
    assert torch.allclose(got, shifted / shifted.sum(1, keepdim=True))


def _load_cora_worker(root: str, cache: str, barrier, queue) -> None:  # type: ignore[no-untyped-def]
    try:
        barrier.wait(timeout=120)
        d = load_dataset("cora", root, cache=cache).data
        queue.put((d.x.sum().item(), d.edge_index.sum().item(), int(d.train_mask.sum())))
    except BaseException as exc:  # report, never hang the parent
        queue.put(repr(exc))


def test_concurrent_processes_process_once_and_agree(shared_data: Path, tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_load_cora_worker,
                         args=(str(shared_data), str(tmp_path / "fresh"), barrier, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(isinstance(g, tuple) for g in got), got
    assert got[0] == got[1] and got[0][2] == 140
    assert len(list((tmp_path / "fresh").rglob(".complete"))) == 1


def test_interrupted_pyg_processing_is_redone(shared_data: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from torch_geometric.datasets import Planetoid

    real = Planetoid.process

    def killed(self) -> None:  # type: ignore[no-untyped-def]
        Path(self.processed_paths[0]).write_bytes(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(Planetoid, "process", killed)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("cora", shared_data, cache=tmp_path / "cache")
    monkeypatch.setattr(Planetoid, "process", real)
    ds = load_dataset("cora", shared_data, cache=tmp_path / "cache")  # redone, not loaded
    assert ds.data.num_nodes == 2708 and ds.data.edge_index.size(1) == 10556


def test_ogb_stamp_is_written_after_processing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ogb.nodeproppred import PygNodePropPredDataset

    fabricate_ogbn_proteins(tmp_path / "ogb", num_nodes=60, num_edges=200)
    real = PygNodePropPredDataset.process

    def killed(self) -> None:  # type: ignore[no-untyped-def]
        Path(self.processed_paths[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(self.processed_paths[0]).write_bytes(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(PygNodePropPredDataset, "process", killed)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("ogbn-proteins", tmp_path / "ogb", cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob(".complete"))
    monkeypatch.setattr(PygNodePropPredDataset, "process", real)
    ds = load_dataset("ogbn-proteins", tmp_path / "ogb", cache=tmp_path / "cache")
    assert ds.data.num_nodes == 60
