"""The graph-store interface on the sharded backend (real GraphShard actors): the same answers
as the local backend in original ids, and NML-GCL mini-batch training with the same losses and
parameters at P = 1 and P = 2.

Ray runs once for the module on 127.0.0.1; run it inside a private network namespace:

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/distributed/test_store_sharded.py -q'
"""
from __future__ import annotations

import json
import time
import pickle

import pytest
import torch
from torch_geometric.data import Data

ray = pytest.importorskip("ray")

from distgcl.config import load_config  # noqa: E402
from distgcl.distributed.partition import partition_graph  # noqa: E402
from distgcl.distributed.shards import GraphShards  # noqa: E402
from distgcl.methods import GraphInfo, build_method  # noqa: E402
from distgcl.store import LocalGraphStore, ShardedGraphStore  # noqa: E402
from distgcl.work import GraphServices, Work  # noqa: E402
from shard_graphs import mixed_graph  # noqa: E402

KEYS = [(1, "auto"), (2, "random")]  # (shards, order): "random" renumbers every node


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             _temp_dir="/tmp/ray-store", log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data():
    ei, n, _ = mixed_graph()
    g = torch.Generator().manual_seed(1)
    return Data(x=torch.randn(n, 6, generator=g), edge_index=ei,
                y=torch.randint(0, 4, (n,), generator=g), num_nodes=n)


@pytest.fixture(scope="module")
def stores(ray_session, data, tmp_path_factory):
    root = tmp_path_factory.mktemp("partitions")
    started = {}
    for p, order in KEYS:
        m = partition_graph(data.edge_index, data.num_nodes, p, root, x=data.x, y=data.y,
                            order=order)
        started[p] = GraphShards(m, num_cpus=0.1, threads=1, timeout=120, serve="sampling")
    yield {p: ShardedGraphStore.from_shards(s, num_classes=4) for p, s in started.items()}
    for s in started.values():
        s.shutdown()


@pytest.mark.parametrize("p", [1, 2])
def test_feature_store_round_trip_in_original_ids(data, stores, p):
    store = stores[p]
    ids = torch.tensor([490, 0, 17, 250, 3])
    assert torch.equal(store.get_tensor(group_name=None, attr_name="x", index=ids), data.x[ids])
    assert torch.equal(store.get_tensor(group_name=None, attr_name="y", index=ids), data.y[ids])
    assert store.get_tensor_size(group_name=None, attr_name="x") == (data.num_nodes, 6)
    assert (store.num_nodes, store.num_features, store.num_classes) == (data.num_nodes, 6, 4)
    row, col = store.get_edge_index(edge_type=None, layout="coo")
    assert torch.equal(torch.stack([row, col]), data.edge_index)  # input order, original ids


@pytest.mark.parametrize("p", [1, 2])
def test_induced_edges_and_samples_equal_the_local_store(data, stores, p):
    local, store = LocalGraphStore(data, sampler="torch"), stores[p]
    ids = torch.randperm(data.num_nodes, generator=torch.Generator().manual_seed(2))[:150]
    for a, b in zip(store.induced_edges(ids), local.induced_edges(ids)):
        assert torch.equal(a, b)
    seeds = ids[:20]
    got = store.sample(seeds, [4, -1], torch.Generator().manual_seed(3))
    want = local.sample(seeds, [4, -1], torch.Generator().manual_seed(3))
    assert torch.equal(got.n_id, want.n_id) and torch.equal(got.edge_index, want.edge_index)
    assert store.calls > 0


def test_store_pickles_into_a_ray_task(data, stores):
    store = pickle.loads(pickle.dumps(stores[2]))

    @ray.remote(num_cpus=0)
    def rows(s, ids):
        return s.features(ids)

    ids = torch.tensor([5, 400, 2])
    assert torch.equal(ray.get(rows.remote(store, ids), timeout=300), data.x[ids])


def _nml_run(data, work: Work, graph, steps: int = 3):
    cfg = load_config(None, ["method=nml", "model.out_dim=8", "model.hidden_dim=8",
                             "model.activation=rrelu", "model.activate_last=false",
                             "model.proj_dim=0", "train.lr=0.01", "nml.mode=minibatch",
                             "nml.batch_size=32", "nml.num_negatives=24",
                             "nml.num_neighbors=[3,2]", "nml.sampler=torch",
                             f"nml.batches_per_epoch={steps}", "train.seed=4"])
    torch.manual_seed(0)
    method = build_method(cfg, GraphInfo(num_nodes=data.num_nodes, num_features=6,
                                         num_classes=4), work)
    method.configure_optimizers()
    torch.manual_seed(1)
    assert method.steps_per_epoch(graph) == steps
    losses = [method.training_step(b)["loss"] for epoch in (1, 2)
              for b in method.batches(graph, epoch)]
    return losses, method.state_dict()


@pytest.mark.parametrize("p", [1, 2])
def test_nml_minibatch_from_the_sharded_store_equals_the_local_store(data, stores, p):
    want_losses, want_state = _nml_run(data, Work(seed=4), data)
    # no graph in the worker: everything comes from the store the trainer hands over
    got_losses, got_state = _nml_run(data, Work(seed=4, services=GraphServices(
        store=stores[p])), None)
    assert len(got_losses) == 6 and got_losses == want_losses
    assert want_state.keys() == got_state.keys()
    for k, want in want_state.items():
        assert _same(got_state[k], want), k


def _same(got, want) -> bool:  # type: ignore[no-untyped-def]
    """Exact equality of tensors nested in dicts/lists (a module's ``_extra_state``)."""
    if isinstance(want, torch.Tensor):
        return isinstance(got, torch.Tensor) and torch.equal(got, want)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(
            _same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return bool(got == want)


# ---------------------------------------------------------------------- shards owned by the job

CSBM = ["data.csbm.num_nodes=300", "data.csbm.num_features=8", "data.csbm.num_classes=3",
        "train.progress=false"]


def test_job_shards_serve_the_store_and_the_spectral_step(ray_session, tmp_path):
    """The driver's actors (JobShards) are the worker's store and E2Neg's eigensolver; a graph
    they do not hold (a component subgraph) falls back to the solver's own actors; stopped at
    the end of the job."""
    import numpy as np

    from distgcl.data import load_from_config
    from distgcl.distributed.services import (JobShards, ShardedEigensolver,
                                              graph_services_from_handoff)
    from distgcl.spectral import adjacency

    config = load_config(None, ["method=e2neg", "dist.shards=2", *CSBM])
    job = JobShards.start(config, tmp_path)
    try:
        handoff = pickle.loads(pickle.dumps(job.handoff()))  # what travels to the workers
        services = graph_services_from_handoff(handoff, 2, tmp_path)
        dataset = load_from_config(config.data, seed=config.train.seed)
        data = dataset.data
        ids = torch.tensor([299, 0, 150])
        assert torch.equal(services.store.features(ids), data.x[ids])
        assert services.store.num_classes == dataset.num_classes
        adj = adjacency(data.edge_index, data.num_nodes, dtype=bool)
        options = dict(solver="chebyshev", tol=1e-8, maxiter=300, seed=0)
        mine = services.eigensolver(adj, 6, **options)
        own = ShardedEigensolver(str(tmp_path / "own"), 2)(adj, 6, **options)
        assert mine.details.get("job_shards") and "job_shards" not in own.details
        np.testing.assert_allclose(mine.eigenvalues, own.eigenvalues, atol=1e-9)
        sub = adj[:200][:, :200]
        assert "job_shards" not in services.eigensolver(sub, 6, **options).details
        actors = handoff["actors"]
    finally:
        job.shutdown()
    # ray.kill is asynchronous: a call right after shutdown may still be served
    deadline = time.monotonic() + 60
    with pytest.raises(ray.exceptions.RayActorError):
        while time.monotonic() < deadline:
            ray.get(actors[0].pid.remote(), timeout=60)
            time.sleep(0.2)


NML_JOB = ["method=nml", "model.proj_dim=0", "model.out_dim=16", "model.hidden_dim=16",
           "model.activation=rrelu", "model.activate_last=false", "nml.mode=minibatch",
           "nml.batch_size=50", "nml.num_negatives=40", "nml.num_neighbors=[5,5]",
           "nml.sampler=torch", "nml.inner_steps=1", "data.csbm.num_nodes=400",
           "data.csbm.num_features=16", "data.csbm.num_classes=4", "train.epochs=2",
           "train.threads=1", "train.progress=false", "eval.probe_seeds=1",
           "eval.probe_epochs=20", "eval.clustering_runs=1", "dist.checkpoint_every=4",
           "dist.max_failures=2", "dist.num_workers=1"]


def _alive_shard_actors() -> int:
    from ray._private.state import actors

    return sum(1 for a in actors().values()
               if "GraphShard" in a.get("ActorClassName", "") and a.get("State") == "ALIVE")


def test_nml_job_trains_from_the_job_shards_through_a_worker_restart(ray_session, tmp_path):
    """``dist.shards: 2`` for NML: the driver starts the shards, the worker trains from them
    (store calls recorded) with the numbers of the run without shards, a worker killed by pid
    resumes on the same actors, and the actors stop with the job."""
    from killing import kill_rank_after_checkpoint

    from distgcl.distributed.trainer import train_distributed

    def config(name: str, *extra: str):
        return load_config(None, [*NML_JOB, f"dist.storage_path={tmp_path}",
                                  f"dist.run_name={name}", *extra])

    def epochs(name: str) -> list[dict]:
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    before = _alive_shard_actors()  # the module's own stores (fixture) stay alive
    train_distributed(config("plain"))
    with kill_rank_after_checkpoint(tmp_path / "sharded", rank=0, step=8, timeout=300) as k:
        train_distributed(config("sharded", "dist.shards=2"))
    assert k.get("pid")  # the worker group was restarted mid-run
    plain, sharded = epochs("plain"), epochs("sharded")
    assert [e["epoch"] for e in sharded] == [1, 2]
    # up to float32 rounding: this killed-and-resumed run differs from the clean one in the
    # 8th digit (a clean sharded job gives the plain job's losses exactly, as the in-process
    # NML test above does; the kill/resume difference is not explained yet)
    assert [e["loss"] for e in sharded] == pytest.approx([e["loss"] for e in plain], rel=1e-6)
    assert all(e["store_calls"] == 0 for e in plain)
    # per step: locate the seeds, 2 rounds per hop, the feature rows
    assert all(e["store_calls"] >= 2 * 2 + 2 for e in sharded)
    assert _alive_shard_actors() == before  # the job's shard actors stopped with it
