"""The training step's sparse GCN layers (issue 19): ``GCNEncoder.sparse`` (CSR sparse x dense
products with their backward) against PyG's per-edge messages (``sparse=False``): same values to
1e-5, same gradients of every parameter and of the input, on graphs with isolated nodes,
duplicate edges, self loops already present and directed edges, with and without ``targets``."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from distgcl.nn import GCNEncoder
from distgcl.nn.encoder import normalized_operator

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _graph(seed: int, n: int = 60, e: int = 240, f: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Directed random edges over nodes ``0..n-11`` (the last 10 isolated), plus 15 duplicated
    edges, 8 self loops (one of them twice) and features ``(n, f)``."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 10, (2, e), generator=g)
    loops = torch.randint(0, n - 10, (8,), generator=g)
    ei = torch.cat([ei, ei[:, :15], loops.repeat(2, 1), loops[:1].repeat(2, 1)], dim=1)
    ei = ei[:, torch.randperm(ei.size(1), generator=g)]
    return torch.randn(n, f, generator=g), ei


def _run(enc: GCNEncoder, x: torch.Tensor, ei: torch.Tensor, targets: torch.Tensor | None,
         sparse: bool, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and gradients (parameters and ``x``) of a fixed random loss, one path."""
    enc.sparse = sparse
    enc.zero_grad()
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # RReLU's training-mode slopes: the same draws on both paths
    out = enc(x, ei, targets)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weight).sum().backward()
    grads = {name: p.grad.clone() for name, p in enc.named_parameters()}
    grads["x"] = x.grad.clone()
    return out.detach(), grads


CASES = [(1, "relu", True, 12, 8), (2, "prelu", False, 12, 8), (2, "prelu-shared", True, 12, 40),
         (3, "rrelu", False, 12, 16), (2, "relu", True, 40, 8)]


@pytest.mark.parametrize("layers,activation,activate_last,in_dim,out_dim", CASES)
@pytest.mark.parametrize("with_targets", [False, True])
def test_sparse_forward_and_gradients_equal_messages(layers: int, activation: str,
                                                     activate_last: bool, in_dim: int,
                                                     out_dim: int, with_targets: bool) -> None:
    x, ei = _graph(layers, f=in_dim)
    targets = torch.tensor([3, 55, 0, 17, 49, 8]) if with_targets else None  # 55: isolated
    torch.manual_seed(0)
    enc = GCNEncoder(in_dim, out_dim, layers=layers, activation=activation,
                     activate_last=activate_last).train()
    want, want_grads = _run(enc, x, ei, targets, sparse=False)
    got, got_grads = _run(enc, x, ei, targets, sparse=True)
    torch.testing.assert_close(got, want, **TOL)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], **TOL, msg=name)


def test_targets_rows_equal_full_output() -> None:
    x, ei = _graph(7)
    targets = torch.tensor([9, 2, 51, 30])
    torch.manual_seed(0)
    enc = GCNEncoder(12, 8, layers=2, activation="prelu").eval()
    torch.testing.assert_close(enc(x, ei, targets), enc(x, ei)[targets], **TOL)


def test_sparse_is_the_default_and_skips_per_edge_messages() -> None:
    x, ei = _graph(3)
    enc = GCNEncoder(12, 8, layers=2)
    calls: list[str] = []
    for conv in enc.convs:  # GCNConv.forward is PyG's per-edge path (propagate: gather+scatter)
        conv.register_forward_hook(lambda *_: calls.append("messages"))
    assert enc.sparse
    enc(x, ei)
    enc(x, ei, torch.tensor([1, 2]))
    assert calls == []
    enc.sparse = False
    enc(x, ei)
    assert calls == ["messages", "messages"]


def test_state_dict_and_hparams_do_not_depend_on_the_path() -> None:
    torch.manual_seed(0)
    old = GCNEncoder(12, 8, layers=2, activation="prelu", sparse=False)
    new = GCNEncoder(**old.hparams)  # what export.load_encoder does with encoder.pt
    assert new.sparse and "sparse" not in old.hparams
    assert list(new.state_dict()) == list(old.state_dict())
    new.load_state_dict(old.state_dict())
    x, ei = _graph(5)
    torch.testing.assert_close(new.eval()(x, ei), old.eval()(x, ei), **TOL)


def test_sparse_step_is_deterministic_on_cpu() -> None:
    x, ei = _graph(11)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        enc = GCNEncoder(12, 16, layers=2, activation="rrelu").train()
        results.append(_run(enc, x, ei, None, sparse=True))
    (a, ga), (b, gb) = results
    assert torch.equal(a, b)
    assert all(torch.equal(ga[k], gb[k]) for k in ga)


def test_normalized_operator_is_gcn_norm_with_duplicates_summed() -> None:
    x, ei = _graph(13)
    n = x.size(0)
    enc = GCNEncoder(12, 8, layers=1)
    got = normalized_operator(enc.convs[0], ei, n, torch.float32).to_dense()
    norm_ei, w = gcn_norm(ei, None, n, add_self_loops=True)  # PyG: add_remaining_self_loops
    want = torch.zeros(n, n).index_put_((norm_ei[1], norm_ei[0]), w, accumulate=True)
    torch.testing.assert_close(got, want, **TOL)
    assert torch.equal(got.diagonal() > 0, torch.ones(n, dtype=torch.bool))


def test_embed_sparse_equals_the_training_forward() -> None:
    x, ei = _graph(17)
    torch.manual_seed(0)
    enc = GCNEncoder(12, 40, layers=2, activation="relu").eval()
    want = enc(x, ei)
    torch.testing.assert_close(enc.embed_sparse(x, ei, batch_size=7), want, **TOL)
    enc.sparse = False
    torch.testing.assert_close(enc(x, ei), want, **TOL)


def test_sparse_step_keeps_every_tensor_on_the_inputs_device() -> None:
    # the default device made 'meta' (see tests/gpu/test_placement.py): a factory call that does
    # not follow its inputs makes a meta tensor next to the CPU ones and the step fails
    x, ei = _graph(19)
    torch.manual_seed(0)
    enc = GCNEncoder(12, 8, layers=2, activation="prelu")
    want = enc(x, ei, torch.tensor([4, 1]))
    with torch.device("meta"):
        targets = torch.tensor([4, 1], device="cpu")
        out = enc(x, ei, targets)
        out.sum().backward()
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, want, **TOL)


@pytest.mark.gpu
def test_sparse_step_on_cuda_equals_cpu() -> None:
    x, ei = _graph(23)
    torch.manual_seed(0)
    enc = GCNEncoder(12, 8, layers=2, activation="prelu")
    want, want_grads = _run(enc, x, ei, torch.tensor([3, 0]), sparse=True)
    enc = enc.cuda()
    got, got_grads = _run(enc, x.cuda(), ei.cuda(), torch.tensor([3, 0]).cuda(), sparse=True)
    torch.testing.assert_close(got.cpu(), want, **TOL)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name].cpu(), want_grads[name], **TOL, msg=name)
