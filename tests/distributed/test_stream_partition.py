"""Streaming partition (distgcl.distributed.partition.stream_partition) from OGB-style CSVs and
``file`` graphs: the same shard files as the in-memory partitioner with the same ownership.

The last test starts Ray (once, on 127.0.0.1); run the module inside a private network namespace:

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/distributed/test_stream_partition.py'
"""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from distgcl.data.csv_gz import GzipCsvWriter, format_int_rows, format_milli_rows
from distgcl.data.ogb import proteins_node_features
from distgcl.distributed.partition import (CsvGraphSource, FileGraphSource, load_permutation,
                                           load_shard, partition_graph, stream_partition)
from shard_graphs import mixed_graph

CHUNK = 97  # edges / rows per chunk: many chunks, one ending mid-way through every file


@pytest.fixture(scope="module")
def graph():
    ei, n, c = mixed_graph()  # duplicates, self-loops, one-way edges, 6 isolated nodes
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-40, 40, (n, 5), generator=g).float() / 8  # exact in CSV and float32
    y = torch.randint(0, 7, (n,), generator=g)
    e_attr = torch.randint(0, 1001, (ei.size(1), 3), generator=g)
    return {"ei": ei, "n": n, "c": c, "x": x, "y": y, "e_milli": e_attr}


def _write_csv_dir(root, graph, node_feat: bool = True) -> None:
    raw = root / "raw"
    with GzipCsvWriter(raw / "edge.csv.gz") as f:
        f.write(format_int_rows(graph["ei"].t().numpy()))
    with GzipCsvWriter(raw / "num-node-list.csv.gz") as f:
        f.write(format_int_rows(np.array([[graph["n"]]])))
    with GzipCsvWriter(raw / "node-label.csv.gz") as f:
        f.write(format_int_rows(graph["y"].numpy()[:, None]))
    with GzipCsvWriter(raw / "edge-feat.csv.gz") as f:
        f.write(format_milli_rows(graph["e_milli"].numpy()))
    if node_feat:
        with gzip.open(raw / "node-feat.csv.gz", "wt") as f:
            np.savetxt(f, graph["x"].numpy(), fmt="%.6f", delimiter=",")


@pytest.fixture(scope="module")
def csv_dir(graph, tmp_path_factory):
    root = tmp_path_factory.mktemp("ogb_like")
    _write_csv_dir(root, graph)
    return root


def _assert_same_partition(streamed, memory) -> None:
    """Same manifest numbers, permutation and arrays (values and dtypes) in every shard."""
    for field in ("num_shards", "num_nodes", "num_edges", "nnz", "bounds", "num_components",
                  "shared_components", "num_features"):
        assert getattr(streamed, field) == getattr(memory, field), field
    for k in ("method", "edge_cut", "edge_cut_random", "edge_cut_identity", "undirected_edges",
              "halo_total"):
        assert streamed.order[k] == memory.order[k], k
    assert streamed.extra["has_labels"] == memory.extra["has_labels"]
    for a, b in zip(load_permutation(streamed), load_permutation(memory)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    for p in range(memory.num_shards):
        s, m = load_shard(streamed, p), load_shard(memory, p)
        assert sorted(s) == sorted(m)
        for key in m:
            assert s[key].dtype == m[key].dtype, key
            if key == "trivial":  # per-component sums taken in another order
                np.testing.assert_allclose(s[key], m[key], rtol=1e-14, atol=0)
            else:
                np.testing.assert_array_equal(s[key], m[key], err_msg=key)
        for k in ("rows", "nnz", "in_edges", "halo"):
            assert streamed.shards[p][k] == memory.shards[p][k], k


@pytest.mark.parametrize("p,order", [(1, "identity"), (2, "hash"), (3, "identity"),
                                     (3, "hash")])
def test_streamed_csv_partition_equals_the_in_memory_one(graph, csv_dir, tmp_path, p, order):
    streamed = stream_partition(CsvGraphSource(csv_dir), p, tmp_path / "s", order=order,
                                chunk=CHUNK)
    memory = partition_graph(graph["ei"], graph["n"], p, tmp_path / "m", x=graph["x"],
                             y=graph["y"], order=order)
    assert streamed.extra["streamed"] and streamed.num_components == graph["c"]
    _assert_same_partition(streamed, memory)
    # written once: the same input and parameters reuse the directory
    again = stream_partition(CsvGraphSource(csv_dir / "raw"), p, tmp_path / "s", order=order,
                             chunk=CHUNK)
    assert again.root == streamed.root and len(list((tmp_path / "s").iterdir())) == 1


@pytest.mark.parametrize("block", [1, 10**9])
def test_blocks_of_rows_do_not_change_the_files(graph, csv_dir, tmp_path, block):
    """Pass 2 in blocks of rows (1: every row its own block; 10**9: one block per shard)
    writes the same shards as the in-memory partitioner."""
    streamed = stream_partition(CsvGraphSource(csv_dir), 3, tmp_path / "s", order="hash",
                                chunk=CHUNK, block=block)
    memory = partition_graph(graph["ei"], graph["n"], 3, tmp_path / "m", x=graph["x"],
                             y=graph["y"], order="hash")
    _assert_same_partition(streamed, memory)


def test_streamed_file_graph_equals_the_in_memory_partition(graph, tmp_path):
    path = tmp_path / "g.pt"
    torch.save(Data(x=graph["x"], edge_index=graph["ei"], y=graph["y"], num_nodes=graph["n"]),
               path)
    streamed = stream_partition(FileGraphSource(path), 2, tmp_path / "s", order="hash",
                                chunk=CHUNK)
    memory = partition_graph(graph["ei"], graph["n"], 2, tmp_path / "m", x=graph["x"],
                             y=graph["y"], order="hash")
    _assert_same_partition(streamed, memory)


def test_streamed_edge_features_and_reverse_edges(graph, tmp_path):
    """Proteins-style node features (sum and mean of the in-edges' features) and a one-way
    edge list made two-way (one chunk: the reversed copy follows all edges)."""
    _write_csv_dir(tmp_path, graph, node_feat=False)
    source = CsvGraphSource(tmp_path, edge_features="sum+mean")
    streamed = stream_partition(source, 2, tmp_path / "s", order="identity", chunk=CHUNK)
    x = proteins_node_features(graph["ei"], graph["e_milli"].double() / 1000, graph["n"],
                               how="sum+mean")
    memory = partition_graph(graph["ei"], graph["n"], 2, tmp_path / "m", x=x, y=graph["y"],
                             order="identity")
    _assert_same_partition(streamed, memory)
    big = graph["ei"].size(1)
    both = stream_partition(CsvGraphSource(tmp_path, add_reverse=True), 3, tmp_path / "r",
                            order="hash", chunk=big)
    two_way = torch.cat([graph["ei"], graph["ei"].flip(0)], dim=1)
    memory = partition_graph(two_way, graph["n"], 3, tmp_path / "m2", y=graph["y"],
                             order="hash")
    assert both.num_edges == 2 * big and both.num_features == 0
    _assert_same_partition(both, memory)


def test_stream_partition_refuses_bad_input(graph, csv_dir, tmp_path):
    with pytest.raises(ValueError, match="METIS and RCM need the whole graph"):
        stream_partition(CsvGraphSource(csv_dir), 2, tmp_path, order="rcm")
    with pytest.raises(ValueError, match="block must be >= 1"):
        stream_partition(CsvGraphSource(csv_dir), 2, tmp_path, block=0)
    with pytest.raises(FileNotFoundError, match="edge.csv.gz"):
        CsvGraphSource(tmp_path)
    path = tmp_path / "bad.pt"
    torch.save({"x": graph["x"], "edge_index": graph["ei"] + 5}, path)
    with pytest.raises(ValueError, match=r"edge ids outside \[0, 491\)"):
        stream_partition(FileGraphSource(path), 2, tmp_path / "s", chunk=CHUNK)
    assert not list((tmp_path / "s").iterdir())  # nothing half-written left behind


def test_eigensolver_sampler_and_inference_run_on_a_streamed_partition(graph, csv_dir,
                                                                       tmp_path):
    ray = pytest.importorskip("ray")
    from distgcl.distributed.inference import sharded_embeddings
    from distgcl.distributed.linalg import sharded_eigenpairs
    from distgcl.distributed.sampling import ShardedNeighborSampler
    from distgcl.distributed.shards import GraphShards
    from distgcl.nn.encoder import GCNEncoder
    from distgcl.sampling import CSRNeighborSampler
    from distgcl.spectral import (adjacency, connected_components, laplacian_from_adjacency,
                                  smallest_eigenpairs, trivial_eigenvectors)

    ei, n = graph["ei"], graph["n"]
    m = stream_partition(CsvGraphSource(csv_dir), 2, tmp_path, order="hash", chunk=CHUNK)
    adj = adjacency(ei, n)
    _, comp = connected_components(adj)
    ref = smallest_eigenpairs(laplacian_from_adjacency(adj), 14,
                              null_space=trivial_eigenvectors(adj, comp), solver="dense")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir="/tmp/ray-stream", log_to_driver=False, configure_logging=False)
    try:
        with GraphShards(m, num_cpus=0.1, threads=1, timeout=120) as shards:
            res = sharded_eigenpairs(shards, 14, tol=1e-8)
            np.testing.assert_allclose(res.eigenvalues, ref.eigenvalues, atol=1e-6)
            seeds = torch.tensor([17, 3, 150, 42, 99, n - 1])
            local = CSRNeighborSampler(ei, n, [4, 3])
            remote = ShardedNeighborSampler(shards, [4, 3])
            a = local.sample(seeds, torch.Generator().manual_seed(0))
            b = remote.sample(seeds, torch.Generator().manual_seed(0))
            assert torch.equal(a.n_id, b.n_id) and torch.equal(a.edge_index, b.edge_index)
            assert torch.equal(a.e_id, b.e_id)
            assert torch.equal(remote.features(b.n_id), graph["x"][b.n_id])
            torch.manual_seed(0)
            enc = GCNEncoder(5, 8, layers=2, activation="prelu").eval()
            sharded_embeddings(shards, enc, tmp_path / "z.pt", chunk_rows=100)
            torch.testing.assert_close(torch.load(tmp_path / "z.pt"),
                                       enc.embed_sparse(graph["x"], ei), atol=1e-5, rtol=0)
    finally:
        ray.shutdown()
