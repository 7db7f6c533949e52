"""The graph partitioner (distgcl.distributed.partition): no Ray here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distgcl.distributed import partition
from distgcl.distributed.partition import (ShardChecksumError, edge_cut, load_permutation,
                                           load_shard, partition_graph)
from distgcl.sampling import CSRNeighborSampler
from distgcl.spectral import adjacency, connected_components, degrees, trivial_eigenvectors
from shard_graphs import directed_multigraph, multi_component_graph


@pytest.fixture(scope="module")
def graph():
    ei, n, c = multi_component_graph()
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 7
    return ei, n, c, x, y


@pytest.mark.parametrize("parts,order", [(1, "auto"), (3, "auto"), (4, "random"),
                                         (2, "identity")])
def test_partition_covers_every_node_once_with_exact_halos(graph, tmp_path, parts, order):
    ei, n, c, x, y = graph
    m = partition_graph(ei, n, parts, tmp_path, x=x, y=y, order=order)
    assert m.num_shards == parts and m.num_nodes == n and m.num_edges == ei.size(1)
    assert m.num_components == c
    new_to_old, old_to_new = load_permutation(m)
    assert np.array_equal(np.sort(new_to_old), np.arange(n))
    assert np.array_equal(old_to_new[new_to_old], np.arange(n))
    adj = adjacency(ei, n, dtype=bool)
    deg = degrees(adj)
    _, comp = connected_components(adj)
    triv = trivial_eigenvectors(adj, comp)
    seen = []
    for p in range(parts):
        s = load_shard(m, p)
        lo, hi = s["rows"]
        assert (lo, hi) == (m.bounds[p], m.bounds[p + 1])
        old = s["old_ids"].astype(np.int64)
        assert np.array_equal(old, new_to_old[lo:hi])
        seen.append(old)
        # rows of A in new numbering, columns sorted
        sub = sp.csr_matrix((np.ones(s["adj_indices"].size), s["adj_indices"], s["adj_indptr"]),
                            shape=(hi - lo, n))
        want = adj[old][:, new_to_old].astype(np.float64)
        assert (sub != want).nnz == 0
        # halo = exactly the remote columns of its rows, sorted, with their global degrees
        cols = np.unique(s["adj_indices"])
        remote = cols[(cols < lo) | (cols >= hi)]
        assert np.array_equal(s["halo"], remote)
        np.testing.assert_array_equal(s["halo_degree"], deg[new_to_old[remote]])
        np.testing.assert_array_equal(s["degree"], deg[old])
        np.testing.assert_allclose(s["trivial"], triv[old, comp[old]])
        assert np.array_equal(s["component"], comp[old])
        np.testing.assert_array_equal(s["x"], x[old].numpy())
        np.testing.assert_array_equal(s["y"], y[old].numpy())
    allnodes = np.concatenate(seen)
    assert allnodes.size == n and np.unique(allnodes).size == n  # every node exactly once
    # send lists: what shard p sends to q is q's halo restricted to p's rows
    shards = [load_shard(m, p) for p in range(parts)]
    for p, s in enumerate(shards):
        for q in range(parts):
            sent = s["send"][s["send_ptr"][q]:s["send_ptr"][q + 1]]
            halo_q = shards[q]["halo"]
            lo, hi = m.bounds[p], m.bounds[p + 1]
            assert np.array_equal(sent, halo_q[(halo_q >= lo) & (halo_q < hi)] if q != p else [])
    assert m.order["edge_cut"] == edge_cut(adj, old_to_new, np.asarray(m.bounds))
    assert m.order["halo_total"] == sum(s["halo"].size for s in shards)


def test_in_edges_follow_the_local_sampler_order(tmp_path):
    ei = directed_multigraph()
    n = 400
    m = partition_graph(ei, n, 3, tmp_path, order="random")
    ref = CSRNeighborSampler(ei, n, [-1])
    new_to_old, old_to_new = load_permutation(m)
    for p in range(3):
        s = load_shard(m, p)
        for i, old in enumerate(s["old_ids"]):
            a, b = s["in_indptr"][i], s["in_indptr"][i + 1]
            ra, rb = int(ref.rowptr[old]), int(ref.rowptr[old + 1])
            assert np.array_equal(s["in_src_old"][a:b], ref.nbr[ra:rb].numpy())
            assert np.array_equal(s["in_eid"][a:b], ref.eid[ra:rb].numpy())
            assert np.array_equal(s["in_src_new"][a:b], old_to_new[ref.nbr[ra:rb].numpy()])


def test_checksum_mismatch_is_refused(graph, tmp_path):
    ei, n, *_ = graph
    m = partition_graph(ei, n, 2, tmp_path)
    load_shard(m, 1)
    path = m.shard_path(1)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardChecksumError, match="shard-1.npz"):
        load_shard(m, 1)
    load_shard(m, 0)  # the other shard is intact
    perm = m.root / m.permutation["file"]
    perm.write_bytes(perm.read_bytes()[:-1])
    with pytest.raises(ShardChecksumError, match="permutation"):
        load_permutation(m)


def test_written_once_and_reused(graph, tmp_path):
    ei, n, _, x, _ = graph
    a = partition_graph(ei, n, 2, tmp_path, x=x)
    stamp = {f.name: f.stat().st_mtime_ns for f in a.root.iterdir()}
    b = partition_graph(ei, n, 2, tmp_path, x=x)
    assert b.root == a.root
    assert {f.name: f.stat().st_mtime_ns for f in b.root.iterdir()} == stamp
    c = partition_graph(ei, n, 3, tmp_path, x=x)
    d = partition_graph(ei, n, 2, tmp_path, x=x + 1)
    assert len({a.root, c.root, d.root}) == 3
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".tmp")]
    manifest = json.loads((a.root / "manifest.json").read_text())
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])


def ring_of_cliques() -> torch.Tensor:
    """20 cliques of 10 in a ring, ids shuffled (``edge_index``, 200 nodes)."""
    blocks = []
    for b in range(20):
        nodes = torch.arange(10) + 10 * b
        r, c = torch.meshgrid(nodes, nodes, indexing="ij")
        keep = r != c
        blocks.append(torch.stack([r[keep], c[keep]]))
        nxt = (10 * b + 9, (10 * (b + 1)) % 200)
        blocks.append(torch.tensor([[nxt[0], nxt[1]], [nxt[1], nxt[0]]]))
    perm = torch.from_numpy(np.random.default_rng(1).permutation(200))
    return perm[torch.cat(blocks, dim=1)]


@pytest.fixture
def without_metis(monkeypatch):
    """The partitioner as on a machine without torch-sparse / pyg-lib (whatever is installed)."""
    monkeypatch.setattr(partition, "metis_available", lambda: False)
    monkeypatch.setattr(partition, "_metis_parts", _no_metis)


def _no_metis(*args, **kwargs):
    raise AssertionError("METIS called although it is not available")


def test_locality_order_beats_random_on_a_ring_of_cliques(tmp_path, without_metis):
    # RCM recovers the locality of the shuffled ring of cliques, random does not.
    m = partition_graph(ring_of_cliques(), 200, 4, tmp_path)
    assert m.order["method"] == "rcm"
    assert m.order["metis_available"] is False
    # random: about 3/4 of the 920 edges cut; RCM: a few ring edges and split cliques
    assert m.order["edge_cut_random"] > 600
    assert m.order["edge_cut"] < 0.05 * m.order["edge_cut_random"]


def test_auto_order_takes_metis_parts_when_available(tmp_path, monkeypatch):
    # a stand-in METIS (5 cliques per part): auto uses its parts, ranges = part sizes
    ei = ring_of_cliques()
    clique = np.empty(200, dtype=np.int64)
    clique[np.random.default_rng(1).permutation(200)] = np.arange(200) // 10
    parts = np.minimum(clique // 5, 3)
    parts[clique == 19] = 0  # uneven parts: bounds must follow the counts
    monkeypatch.setattr(partition, "metis_available", lambda: True)
    monkeypatch.setattr(partition, "_metis_parts", lambda adj, k: parts if k == 4 else None)
    m = partition_graph(ei, 200, 4, tmp_path)
    assert m.order["method"] == "metis" and m.order["metis_available"] is True
    assert list(m.bounds) == [0, 60, 110, 160, 200]
    new_to_old, _ = load_permutation(m)
    for p in range(4):
        assert set(parts[new_to_old[m.bounds[p]:m.bounds[p + 1]]]) == {p}


@pytest.mark.skipif(not partition.metis_available(), reason="no torch-sparse / pyg-lib METIS")
def test_real_metis_cuts_the_ring_of_cliques(tmp_path):
    ei = ring_of_cliques()
    for order in ("metis", "auto"):
        m = partition_graph(ei, 200, 4, tmp_path / order, order=order)
        assert m.order["method"] == "metis" and m.order["metis_available"] is True
        assert m.num_shards == 4 and m.bounds[-1] == 200
        assert m.order["edge_cut"] < 0.05 * m.order["edge_cut_random"]


def test_invalid_arguments(graph, tmp_path, without_metis):
    ei, n, *_ = graph
    with pytest.raises(ValueError, match="num_shards"):
        partition_graph(ei, n, 0, tmp_path)
    with pytest.raises(ValueError, match="unknown order"):
        partition_graph(ei, n, 2, tmp_path, order="spectral")
    with pytest.raises(ImportError, match="metis"):
        partition_graph(ei, n, 2, tmp_path, order="metis")
    with pytest.raises(ValueError, match="x has"):
        partition_graph(ei, n, 2, tmp_path, x=torch.zeros(3, 2))


def test_shard_server_in_process_serves_what_it_loaded(graph, tmp_path):
    from distgcl.distributed.shards import GraphShardServer

    ei, n, _, x, y = graph
    m = partition_graph(ei, n, 2, tmp_path, x=x, y=y, order="random")
    full = GraphShardServer(str(m.path), 1)
    op = GraphShardServer(str(m.path), 1, serve="operator")
    samp = GraphShardServer(str(m.path), 1, serve="sampling", dtype="float32")
    assert op.info()["in_edges"] is None and samp.info()["nnz"] is None
    assert full.info()["nnz"] == op.info()["nnz"] == m.shards[1]["nnz"]
    ids = np.arange(n)
    pos, rows = samp.features(ids)
    assert pos.size == m.bounds[2] - m.bounds[1]
    np.testing.assert_array_equal(rows, x.numpy()[ids[pos]])
    with pytest.raises(RuntimeError, match="serve='operator'"):
        op.in_degree(np.array([m.bounds[1]]))
    with pytest.raises(RuntimeError, match="serve='sampling'"):
        samp.matmul(np.zeros((1, 1)))
    with pytest.raises(ValueError, match="unknown serve"):
        GraphShardServer(str(m.path), 0, serve="everything")
