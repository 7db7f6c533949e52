"""Layer-wise GCN inference over the graph shards (distgcl.distributed.inference).

Ray runs once for the module on 127.0.0.1; run it inside a private network namespace:

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/distributed/test_inference.py -q'
"""
from __future__ import annotations

import math
import os
import signal
import time
import zipfile

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from distgcl.distributed.inference import (RowFile, probe_rows, read_rows,  # noqa: E402
                                           run_layers, sharded_embeddings)
from distgcl.distributed.partition import partition_graph  # noqa: E402
from distgcl.distributed.shards import GraphShards  # noqa: E402
from distgcl.nn.encoder import GCNEncoder  # noqa: E402
from shard_graphs import mixed_graph  # noqa: E402

KEYS = [(1, "auto"), (2, "random"), (3, "identity")]
ENCODERS = {  # aggregate-first and transform-first layers, every activation kind in eval mode
    "prelu-2": dict(hidden_dim=16, out_dim=8, layers=2, activation="prelu"),
    "rrelu-3": dict(hidden_dim=4, out_dim=12, layers=3, activation="rrelu",
                    activate_last=False),
    "shared-1": dict(out_dim=5, layers=1, activation="prelu-shared"),
}


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir="/tmp/ray-inference", log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def graph():
    """Directed multigraph with duplicates, self-loops and 6 isolated nodes."""
    ei, n, _ = mixed_graph()
    x = torch.randn(n, 6, generator=torch.Generator().manual_seed(3))
    y = torch.arange(n) % 5
    assert int((torch.bincount(ei.flatten(), minlength=n) == 0).sum()) == 6
    return {"ei": ei, "n": n, "x": x, "y": y}


@pytest.fixture(scope="module")
def started(ray_session, graph, tmp_path_factory):
    root = tmp_path_factory.mktemp("partitions")
    handles = {}
    for p, order in KEYS:
        m = partition_graph(graph["ei"], graph["n"], p, root, x=graph["x"], y=graph["y"],
                            order=order)
        handles[p] = GraphShards(m, num_cpus=0.1, threads=1, timeout=120, serve="sampling")
    yield handles
    for h in handles.values():
        h.shutdown()


def _encoder(name: str) -> GCNEncoder:
    torch.manual_seed(11)
    enc = GCNEncoder(6, **ENCODERS[name])
    with torch.no_grad():  # non-trivial biases and slopes: a dropped term shows
        for conv in enc.convs:
            conv.bias.uniform_(-0.5, 0.5)
        for act in enc.activations:
            for w in act.parameters():
                w.uniform_(0.05, 0.6)
    return enc.eval()


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("p", [k[0] for k in KEYS])
def test_sharded_embeddings_equal_the_single_process_embedding(graph, started, tmp_path, name,
                                                               p):
    enc = _encoder(name)
    ref = enc.embed_sparse(graph["x"], graph["ei"])
    shards = started[p]
    chunk = 37
    res = sharded_embeddings(shards, enc, tmp_path / "embeddings.pt", chunk_rows=chunk)
    z = torch.load(tmp_path / "embeddings.pt", weights_only=True)
    assert z.dtype == torch.float32 and z.shape == ref.shape == (graph["n"], res.dim)
    torch.testing.assert_close(z, ref, atol=1e-5, rtol=0)
    with zipfile.ZipFile(tmp_path / "embeddings.pt") as zf:
        assert zf.testzip() is None  # every CRC right: a valid archive, not only for torch
    # the driver only ever held one chunk
    bounds = shards.manifest.bounds
    assert res.max_chunk_rows <= chunk
    assert res.chunks == sum(math.ceil((b - a) / chunk) for a, b in zip(bounds, bounds[1:]))
    assert res.layers == len(enc.convs) and res.attempts == 1
    assert not list(tmp_path.glob(".embeddings.pt.tmp-*"))


def test_npy_file_and_probe_rows_read_only_the_scored_rows(graph, started, tmp_path):
    enc = _encoder("prelu-2")
    ref = enc.embed_sparse(graph["x"], graph["ei"])
    shards = started[2]
    sharded_embeddings(shards, enc, tmp_path / "embeddings.npy", chunk_rows=64)
    z = np.load(tmp_path / "embeddings.npy")
    np.testing.assert_allclose(z, ref.numpy(), atol=1e-5, rtol=0)
    ids = torch.tensor([490, 3, 77, 0, 250])
    for name in ("embeddings.npy",):
        torch.testing.assert_close(read_rows(tmp_path / name, ids), ref[ids], atol=1e-5, rtol=0)
    sharded_embeddings(shards, enc, tmp_path / "embeddings.pt")
    rows, labels = probe_rows(tmp_path / "embeddings.pt", ids, shards.actors,
                              shards.manifest.bounds)
    torch.testing.assert_close(rows, ref[ids], atol=1e-5, rtol=0)
    assert torch.equal(labels, graph["y"][ids])


def test_row_file_refuses_missing_or_bad_rows(tmp_path):
    w = RowFile(tmp_path / "z.pt", 4, 2)
    w.write(np.array([2, 0]), np.ones((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="outside"):
        w.write(np.array([4]), np.ones((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        w.write(np.array([1]), np.ones((1, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match="2 rows written of 4"):
        w.close()
    assert not (tmp_path / "z.pt").exists() and not list(tmp_path.iterdir())


def test_a_restarted_shard_loses_the_pass_and_the_rerun_is_identical(graph, started, tmp_path):
    enc = _encoder("prelu-2")
    shards = started[2]
    first = sharded_embeddings(shards, enc, tmp_path / "a.pt")
    run_layers(shards, enc, "kept")
    pid = shards.pids()[1]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for Ray to restart it
        try:
            if shards.pids()[1] != pid:
                break
        except ray.exceptions.RayActorError:
            time.sleep(0.2)
    with pytest.raises(ray.exceptions.RayTaskError, match="InferenceStateLost"):
        shards.get(shards.actors[1].infer_rows.remote("kept", 0, 3))
    again = sharded_embeddings(shards, enc, tmp_path / "b.pt")
    assert first.attempts == again.attempts == 1
    assert torch.equal(torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt"))
