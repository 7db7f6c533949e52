"""The job driver's streamed partition (distgcl.data.sources.graph_source +
stream_partition): the same shards, array by array, as partition_graph on the dataset that
load_from_config gives the local backend, and the same DatasetInfo; partition_for_job streams
where it can and says how. (JobShards.start on the streamed path, with Ray, runs in
tests/distributed/test_worker_from_shards.py: its handoff records ``partitioned_from: stream``.)
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import distgcl.methods  # noqa: F401  (registers the methods the config checks)
from distgcl.config import load_config
from distgcl.data import DatasetInfo, load_from_config
from distgcl.data.proteins import generate_proteins
from distgcl.data.sources import graph_source, stream_plan
from distgcl.distributed.partition import load_shard, partition_graph, stream_partition
from shard_graphs import mixed_graph

CHUNK = 997  # edges / rows per chunk: several chunks per file, one ending mid-way


@pytest.fixture(scope="module")
def proteins_root(tmp_path_factory):
    """A tiny graph in ogbn-proteins' raw layout (the generator; scales below its minimum are
    refused, so nodes and edges are given: 400 nodes, 6000 undirected edges)."""
    root = tmp_path_factory.mktemp("proteins")
    generate_proteins(root, num_nodes=400, num_edges=6000, seed=3, progress=False)
    return root


def _config(*overrides: str):
    return load_config(None, ["train.progress=false", *overrides])


def _assert_same_shards(streamed, loaded) -> None:
    """Same sizes and, in every shard, the same arrays (values and dtypes)."""
    for name in ("num_shards", "num_nodes", "num_edges", "nnz", "bounds", "num_components",
                 "num_features"):
        assert getattr(streamed, name) == getattr(loaded, name), name
    assert streamed.extra["has_labels"] == loaded.extra["has_labels"]
    for p in range(loaded.num_shards):
        s, m = load_shard(streamed, p), load_shard(loaded, p)
        assert sorted(s) == sorted(m)
        for key in m:
            assert s[key].dtype == m[key].dtype, key
            if key == "trivial":  # per-component sums taken in another order
                np.testing.assert_allclose(s[key], m[key], rtol=1e-14, atol=0)
            else:
                np.testing.assert_array_equal(s[key], m[key], err_msg=f"shard {p}: {key}")


def _assert_same_info(a: DatasetInfo, b: DatasetInfo) -> None:
    for f in dataclasses.fields(DatasetInfo):
        if f.name != "fixed_masks":
            assert getattr(a, f.name) == getattr(b, f.name), f.name
    assert (a.fixed_masks is None) == (b.fixed_masks is None)
    if a.fixed_masks is not None:
        for part in ("train", "val", "test"):
            x, y = getattr(a.fixed_masks, part), getattr(b.fixed_masks, part)
            assert x.dtype == y.dtype and torch.equal(x, y), part


def _streamed_and_loaded(config, tmp_path, shards: int):
    plan = graph_source(config.data)
    assert plan is not None
    source, info = plan
    streamed = stream_partition(source, shards, tmp_path / "s", chunk=CHUNK)
    dataset = load_from_config(config.data, seed=0)
    data = dataset.data
    loaded = partition_graph(data.edge_index, data.num_nodes, shards, tmp_path / "m", x=data.x,
                             y=getattr(data, "y", None), order="identity")
    return streamed, loaded, info, dataset


@pytest.mark.parametrize("shards,options", [
    (2, []),  # the default sum+mean features
    (3, ["data.proteins_node_features=sum+mean+species", "data.log_features=true",
         "data.standardize_features=true"]),  # configs/proteins_nml.yaml's options
    (1, ["data.proteins_node_features=mean", "data.normalize_features=true"]),
])
def test_streamed_proteins_equal_the_loaded_partition(proteins_root, tmp_path, shards,
                                                      options):
    config = _config("data.name=ogbn-proteins", f"data.root={proteins_root}",
                     f"data.cache={tmp_path / 'cache'}", *options)
    streamed, loaded, info, dataset = _streamed_and_loaded(config, tmp_path, shards)
    assert streamed.num_edges == 2 * 6000  # ogb's inverse edges, interleaved
    _assert_same_shards(streamed, loaded)
    _assert_same_info(info, dataset.info())
    assert info.split == "species" and info.fixed_masks.train.any()


def _file_graph(path, *, labels: str):
    ei, n, _ = mixed_graph()  # duplicates, self-loops, one-way edges, isolated nodes
    g = torch.Generator().manual_seed(5)
    fields = {"x": torch.rand(n, 6, generator=g, dtype=torch.float64) - 0.3,
              "edge_index": ei.int()}  # stored int32 / float64: the loader casts both
    if labels != "none":
        fields["y"] = torch.randint(0, 4, (n,), generator=g)
    if labels in ("masks", "partial"):  # partial: no test mask, so a random split
        which = torch.randint(0, 3, (n,), generator=g)
        fields.update(train_mask=which == 0, val_mask=which == 1)
        if labels == "masks":
            fields["test_mask"] = which == 2
    torch.save(Data(**fields, num_nodes=n), path)
    return path


@pytest.mark.parametrize("shards,labels,options", [
    (2, "masks", []), (3, "masks", ["data.normalize_features=true"]),
    (2, "labels", ["data.standardize_features=true"]), (1, "none", []), (2, "partial", [])])
def test_streamed_file_graph_equals_the_loaded_partition(tmp_path, shards, labels, options):
    path = _file_graph(tmp_path / "g.pt", labels=labels)
    config = _config("data.name=file", f"data.path={path}", *options)
    streamed, loaded, info, dataset = _streamed_and_loaded(config, tmp_path, shards)
    _assert_same_shards(streamed, loaded)
    _assert_same_info(info, dataset.info())
    assert info.split == {"masks": "file", "labels": "random", "none": "none",
                          "partial": "random"}[labels]


def test_feature_options_are_part_of_the_partition_key(tmp_path):
    """Streamed partitions of the same file with other feature options are other partitions
    (the cache would otherwise serve stale features)."""
    path = _file_graph(tmp_path / "g.pt", labels="labels")
    roots = set()
    for options in ([], ["data.normalize_features=true"], ["data.standardize_features=true"]):
        source, _ = graph_source(_config("data.name=file", f"data.path={path}",
                                         *options).data)
        roots.add(stream_partition(source, 2, tmp_path / "s", chunk=CHUNK).root)
    assert len(roots) == 3


def test_datasets_without_a_streaming_reader(proteins_root, tmp_path):
    assert graph_source(_config("data.name=csbm").data) is None
    assert "small" in stream_plan(_config("data.name=cora").data)
    assert "to_undirected" in stream_plan(_config("data.name=ogbn-arxiv",
                                                  f"data.root={tmp_path}").data)
    # missing raw files: loaded, so that the loader names them
    assert "missing" in stream_plan(_config("data.name=ogbn-proteins",
                                            f"data.root={tmp_path}").data)
    assert "not a file" in stream_plan(_config("data.name=file",
                                               f"data.path={tmp_path / 'none.pt'}").data)
    torch.save({"edge_index": torch.zeros(2, 3, dtype=torch.long)}, tmp_path / "nox.pt")
    assert "no [N, F] features" in stream_plan(_config("data.name=file",
                                                       f"data.path={tmp_path / 'nox.pt'}").data)


def test_partition_for_job_streams_when_it_can(tmp_path, capsys):
    """The driver's partition: a file graph streamed (a second call reuses it), CSBM loaded
    (one line says so)."""
    from distgcl.distributed.services import partition_for_job

    path = _file_graph(tmp_path / "g.pt", labels="masks")
    streamed = _config("dist.shards=2", "data.name=file", f"data.path={path}")
    first, info, how = partition_for_job(streamed, tmp_path / "p")
    again, _, how_again = partition_for_job(streamed, tmp_path / "p")
    assert (how, how_again) == ("stream", "stream") and first.extra["streamed"]
    assert again.root == first.root and info.split == "file"
    small, small_info, how = partition_for_job(
        _config("dist.shards=2", "data.csbm.num_nodes=200"), tmp_path / "p")
    assert how == "loaded" and small.num_nodes == small_info.num_nodes == 200
    out = capsys.readouterr().out
    assert out.count("the driver loads csbm whole") == 1 and "loads file" not in out
