import dataclasses

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

import distgcl.methods  # noqa: F401  (registers the method sections)
from distgcl.config import ConfigError, config_from_dict
from distgcl.losses import grace_block_loss, info_nce
from distgcl.methods import GraphInfo, build_method
from distgcl.methods.e2neg import E2Neg, graph_key, permute_rows
from distgcl.nn import GCNEncoder


def _graph(seed: int = 0) -> Data:
    """Planted partition, 4 blocks x 100 nodes, features = noisy block one-hot."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(100)
    prob = torch.where(y[:, None] == y[None, :], 0.06, 0.003)
    upper = torch.triu(torch.rand(400, 400, generator=g) < prob, diagonal=1)
    row, col = upper.nonzero().t()
    ei = torch.cat([torch.stack([row, col]), torch.stack([col, row])], dim=1)
    x = torch.nn.functional.one_hot(y, 4).float().repeat(1, 4) + 0.5 * torch.randn(400, 16,
                                                                                  generator=g)
    return Data(x=x, edge_index=ei, y=y)


def _method(seed: int = 0, **e2neg) -> E2Neg:
    tree = {"method": "e2neg",
            "model": {"out_dim": 32, "layers": 1, "activation": "prelu", "proj_dim": 32},
            "augment": {"edge_drop_1": 0.2, "edge_drop_2": 0.3, "feature_mask_1": 0.1,
                        "feature_mask_2": 0.2},
            "train": {"epochs": 3, "lr": 1e-3, "seed": seed, "progress": False},
            "e2neg": {"clusters": 4, "num_neighbors": 20, "min_neighbors": 10, **e2neg}}
    config = config_from_dict(tree)
    torch.manual_seed(seed)
    method = build_method(config, GraphInfo(num_nodes=400, num_features=16, num_classes=4))
    method.configure_optimizers()
    return method


def _train(method: E2Neg, data: Data, steps: int, cache=None) -> list[float]:
    method.prepare(data, cache)
    return [method.training_step(b)["loss"] for epoch in range(1, steps + 1)
            for b in method.batches(data, epoch)]


def test_prepare_builds_stars_on_centres():
    data, method = _graph(), _method()
    method.prepare(data)
    batch, share = next(iter(method.batches(data, 1)))
    assert torch.equal(share.ids, batch.centres) and share.total == batch.centres.numel()
    k = batch.centres.numel()
    assert 2 <= k <= 4
    assert torch.equal(batch.centres, torch.arange(k))
    assert (batch.edge_index[1] < k).all() and (batch.edge_index[0] >= k).all()
    assert torch.equal(batch.x, data.x[batch.node_ids])
    assert method.stats["purity"] >= 0.9
    assert method.stats["spectral"]["residual_max"] <= 2 * method.cfg.tol


def test_encoder_targets_and_sparse_path_match_full_encoder():
    data = _graph()
    for layers in (1, 2):
        torch.manual_seed(0)
        enc = GCNEncoder(16, 8, layers=layers, activation="prelu")
        targets = torch.tensor([3, 150, 7, 399])
        full = enc(data.x, data.edge_index)
        torch.testing.assert_close(enc(data.x, data.edge_index, targets), full[targets],
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc.embed_sparse(data.x, data.edge_index), full,
                                   atol=1e-5, rtol=1e-5)


def test_permute_rows_copies():
    x = torch.arange(12.0).view(6, 2)
    before = x.clone()
    rows = torch.tensor([1, 3, 5])
    out, perm = permute_rows(x, rows, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # never in place (the official code's bug)
    assert torch.equal(out[rows], x[rows[perm]])
    assert torch.equal(out[[0, 2, 4]], x[[0, 2, 4]])


def test_two_views_differ():
    data, method = _graph(), _method()
    method.prepare(data)
    batch, _ = next(iter(method.batches(data, 1)))
    x_before = batch.x.clone()
    h1, h2 = method.views(batch)
    assert h1.shape == h2.shape == (batch.centres.numel(), 32)
    assert not torch.allclose(h1, h2, atol=1e-4)
    assert torch.equal(batch.x, x_before)  # views never mutate the stored graph
    # Even with only the paper's permutation, the two views are different tensors.
    method.config.augment = dataclasses.replace(method.config.augment, edge_drop_1=0.0,
                                                edge_drop_2=0.0, feature_mask_1=0.0,
                                                feature_mask_2=0.0)
    h1, h2 = method.views(batch)
    assert not torch.equal(h1, h2)


def test_same_seed_same_centres_and_losses():
    data = _graph()
    a, b, c = _method(seed=0), _method(seed=0), _method(seed=1)
    la, lb = _train(a, data, 4), _train(b, data, 4)
    lc = _train(c, data, 4)
    assert torch.equal(a.star_graph.centres, b.star_graph.centres)
    assert torch.equal(a.star_graph.edge_index, b.star_graph.edge_index)
    assert la == lb
    assert la != lc
    torch.testing.assert_close(a.embed(data), b.embed(data))
    assert a.embed(data).shape == (400, 32)  # evaluated on the full original graph


def test_training_decreases_loss():
    data, method = _graph(), _method()
    losses = _train(method, data, 30)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_cache_reuses_centres(tmp_path):
    data = _graph()
    a = _method()
    a.prepare(data, tmp_path)
    assert a.stats["cache"] == "miss"
    assert len(list(tmp_path.glob("spectral-*.pt"))) == 1
    b = _method()
    b.prepare(data, tmp_path)
    assert b.stats["cache"] == "hit"
    assert torch.equal(a.star_graph.edge_index, b.star_graph.edge_index)
    c = _method(num_neighbors=5)  # new star parameters, same spectral step
    c.prepare(data, tmp_path)
    assert c.stats["cache"] == "spectral"
    assert graph_key(data.edge_index, 400, {"k": 4}) != graph_key(data.edge_index, 401, {"k": 4})


def _explicit_nml_loss(h1, h2, nmn, tau, c):
    """NML-GCL's objective on the centres written out: InfoNCE (inter-view negatives) with
    explicit weights w = n softmax_j cos(g(h_i), g(h'_j)) over j != i, plus c n KL(Unif || m)."""
    k = h1.size(0)
    mask = torch.arange(k).unsqueeze(1) != torch.arange(k).unsqueeze(0)
    f = nmn(h1, h2)
    total = 0.0
    for a, b, fa, fc in ((h1, h2, f.anchor_u, f.candidate_v), (h2, h1, f.anchor_v, f.candidate_u)):
        m = torch.softmax((fa @ fc.t()).masked_fill(~mask, float("-inf")), dim=1)
        w = ((k - 1) * m).masked_fill(~mask, 1.0)
        ce = info_nce(a, b, b, tau, candidate_mask=mask, candidate_weights=w)
        kl = torch.stack([(torch.log(torch.tensor(1.0 / (k - 1))) - torch.log(m[i][mask[i]])).mean()
                          for i in range(k)])
        total = total + 0.5 * (ce + c * (k - 1) * kl)
    return total.mean(), w


def test_nml_variant_weights_centre_negatives():
    data, method = _graph(), _method(nml=True, nml_inner_steps=2)
    assert set(method.optimizers) == {"model", "nmn"}
    method.prepare(data)
    for epoch in range(1, 6):  # a few outer steps, so the NMN has been trained
        for batch in method.batches(data, epoch):
            method.training_step(batch)
    batch = next(iter(method.batches(data, 6)))
    # the loss this step optimises, recomputed independently on the same views and NMN draws
    state, cfg = method.augment_generator.get_state(), method.cfg
    method.train()
    torch.manual_seed(11)  # RReLU of the NMN draws its slopes from the global stream
    with torch.no_grad():
        h1, h2 = method.views(batch[0])
        expected, w = _explicit_nml_loss(h1, h2, method.nmn, cfg.tau, cfg.nml_c)
        ids = torch.arange(h1.size(0))  # the w = 1 baseline: inter-view InfoNCE, unit weights
        uniform = 0.5 * (grace_block_loss(h1, h2, ids, ids, cfg.tau, intra_view=False).mean()
                         + grace_block_loss(h2, h1, ids, ids, cfg.tau, intra_view=False).mean())
    method.augment_generator.set_state(state)
    torch.manual_seed(11)
    method.cfg = dataclasses.replace(cfg, nml_inner_steps=0)  # the encoder step alone
    stats = method.training_step(batch)
    assert stats["loss"] == pytest.approx(expected.item(), rel=1e-5)
    # the weights are not uniform, and they matter: plain (w = 1) InfoNCE is another number
    k = h1.size(0)
    valid = w[~torch.eye(k, dtype=torch.bool)]
    assert valid.std() > 0.05 and valid.max() / valid.min() > 1.2
    assert abs(stats["info_nce"] - uniform.item()) > 1e-3


def _components_graph(seed: int = 0) -> Data:
    """4 components of 100 nodes (no edges between them) + 20 isolated nodes (ids 400-419);
    features: noisy one-hot of the component; isolated node i looks like component i % 4."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.arange(4).repeat_interleave(100)
    same = comp[:, None] == comp[None, :]
    upper = torch.triu((torch.rand(400, 400, generator=g) < 0.1) & same, diagonal=1)
    row, col = upper.nonzero().t()
    ei = torch.cat([torch.stack([row, col]), torch.stack([col, row])], dim=1)
    kind = torch.cat([comp, torch.arange(20) % 4])
    x = torch.nn.functional.one_hot(kind, 4).float().repeat(1, 4) + 0.3 * torch.randn(
        420, 16, generator=g)
    return Data(x=x, edge_index=ei, y=kind)


def test_disconnected_graph_covers_every_node():
    data = _components_graph()
    method = _method(clusters=4, num_neighbors=100, min_neighbors=99)
    method.prepare(data)
    info = method.describe()
    assert info["components"] == 24 and info["isolated_nodes"] == 20
    assert info["components_clustered"] == 4  # one cluster per component (equal sizes)
    assert info["nodes_total"] == 420 and info["nodes_clustered"] == 400
    assert info["nodes_attached"] == 20
    assert info["nodes_in_stars"] == 420  # every node is a centre or a leaf
    graph = method.star_graph
    covered = torch.cat([graph.centres, graph.members])
    assert torch.equal(covered.sort().values, torch.arange(420))  # each exactly once
    kind = data.y
    centres = graph.centres
    assert (centres < 400).all()  # isolated nodes are never centres
    assert sorted(kind[centres].tolist()) == [0, 1, 2, 3]  # one centre per component
    # an isolated node is a leaf of the centre of the component its features look like
    iso = torch.arange(400, 420)
    star_of = torch.full((420,), -1, dtype=torch.long)
    star_of[graph.members] = graph.member_star
    assert torch.equal(kind[centres[star_of[iso]]], kind[iso])
    assert (method.labels >= 0).all() and method.stats["purity"] == 1.0
    batch, _ = next(iter(method.batches(data, 1)))
    assert batch.x.size(0) == 420 and batch.centres.numel() == 4
    assert method.embed(data).shape == (420, 32)


def test_component_largest_keeps_old_behaviour_and_warns():
    data = _components_graph()
    method = _method(clusters=4, num_neighbors=100, min_neighbors=99, component="largest")
    with pytest.warns(RuntimeWarning, match="320 of 420 nodes"):
        method.prepare(data)
    info = method.describe()
    assert info["nodes_clustered"] == 100 and info["nodes_attached"] == 0
    assert info["nodes_in_stars"] == 100


def test_dhondt_allocation_and_feature_attachment():
    from distgcl.spectral import allocate_clusters, nearest_by_features

    assert allocate_clusters(np.array([100, 100, 100, 100]), 4).tolist() == [1, 1, 1, 1]
    assert allocate_clusters(np.array([2120, 30, 26, 0]), 6).tolist() == [6, 0, 0, 0]
    assert allocate_clusters(np.array([600, 300, 100]), 5).tolist() == [4, 1, 0]  # 150 tie: larger
    assert allocate_clusters(np.array([600, 300, 100]), 6).tolist() == [4, 2, 0]
    assert allocate_clusters(np.array([3, 1]), 10).tolist() == [3, 1]  # at most |C| each
    x = np.array([[1.0, 0.1], [0.0, 2.0], [0.0, 0.0]])
    assert nearest_by_features(x, np.array([[0.0, 1.0], [5.0, 0.0]])).tolist() == [1, 0, 0]


def test_config_validation():
    with pytest.raises(ConfigError, match="e2neg.clusters"):
        config_from_dict({"method": "e2neg", "e2neg": {"clusters": 1}})
    with pytest.raises(ConfigError, match="e2neg.max_hops"):
        config_from_dict({"method": "e2neg", "e2neg": {"start_hops": 3, "max_hops": 2}})
    with pytest.raises(ConfigError, match="e2neg.solver"):
        config_from_dict({"method": "e2neg", "e2neg": {"solver": "svds"}})


def test_centre_cache_write_is_atomic_and_a_partial_file_is_rebuilt(tmp_path, monkeypatch):
    import distgcl.checkpoint as ckpt
    from distgcl.methods.e2neg import _load_or_build

    path = tmp_path / "stars-x.pt"
    real_save = torch.save

    def killed_save(obj, f, *args, **kwargs):  # writes half a file, then the process "dies"
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ckpt.torch, "save", killed_save)
    with pytest.raises(KeyboardInterrupt):
        _load_or_build(path, lambda: {"centres": torch.arange(3)})
    assert not path.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    path.write_bytes(b"PK\x03\x04 truncated by an older writer")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        obj, hit = _load_or_build(path, lambda: {"centres": torch.arange(3)})
    assert not hit and obj["centres"].equal(torch.arange(3))
    again, hit = _load_or_build(path, lambda: pytest.fail("rebuilt a valid cache file"))
    assert hit and again["centres"].equal(torch.arange(3))
