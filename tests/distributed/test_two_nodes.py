"""Nodes for real: a :class:`ray.cluster_utils.Cluster` of three Ray nodes on this machine (each
its own raylet and object store), with custom resources that put the job's graph-shard actors on
one node (``dist.shard_resources``) and the Ray Train workers on another
(``dist.worker_resources``); the head node, where the driver runs, has neither and takes
whatever is placed without them. So every batch a worker trains on comes from another node's
object store.

A 2-worker NML-GCL mini-batch job with ``dist.shards: 2`` gives the losses and probe metrics of
the same job without shards (the workers load the graph; embeddings to 1e-5, the probe to one
test node: the sharded job's embedding comes from layer-wise inference on the shards), with one
of its shard actors SIGKILLed by its pid mid-training: Ray restarts it on its node and nothing is
lost or repeated.

Run it inside a private network namespace (Ray binds 127.0.0.1):

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/distributed/test_two_nodes.py -q'
"""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from distgcl.checkpoint import CheckpointManager  # noqa: E402
from distgcl.config import load_config  # noqa: E402
from distgcl.distributed.trainer import (  # noqa: E402
    HEALTH_CHECK_ENV, InfeasibleRequest, check_placement, ensure_ray, train_distributed)
from distgcl.train import STEP_DELAY_ENV  # noqa: E402
from killing import wait_for  # noqa: E402

TIMEOUT = 240  # seconds a run or a wait may take here
STEP_DELAY = "0.05"  # seconds per step: a window to kill a shard in (set before Ray starts)
NML = ["method=nml", "model.proj_dim=0", "model.out_dim=16", "model.hidden_dim=16",
       "model.activation=rrelu", "model.activate_last=false", "nml.mode=minibatch",
       "nml.batch_size=50", "nml.num_negatives=40", "nml.num_neighbors=[5,5]",
       "nml.sampler=torch", "nml.inner_steps=1", "data.csbm.num_nodes=400",
       "data.csbm.num_features=16", "data.csbm.num_classes=4", "train.epochs=2",
       "train.threads=1", "train.progress=false", "eval.probe_seeds=1",
       "eval.probe_epochs=20", "eval.clustering_runs=1", "dist.checkpoint_every=2",
       "dist.max_failures=2", "dist.num_workers=2", "dist.worker_resources={trainers: 1}"]
SHARDED = ["dist.shards=2", "dist.shard_resources={shards: 1}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Head (driver, 2 CPUs, no custom resource), a shards node, a trainers node; the driver
    joins through :func:`ensure_ray` with the cluster's address, as ``dist.address`` does."""
    os.environ.setdefault(HEALTH_CHECK_ENV, "0.25")
    os.environ[STEP_DELAY_ENV] = STEP_DELAY  # the nodes' workers inherit it
    os.environ.setdefault("RAY_worker_niceness", "0")
    common = dict(node_ip_address="127.0.0.1", object_store_memory=80 * 2**20)
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=2, include_dashboard=False,
        temp_dir=str(tmp_path_factory.mktemp("ray")), **common))
    nodes = {"shards": c.add_node(num_cpus=0, resources={"shards": 2}, **common),
             "trainers": c.add_node(num_cpus=2, resources={"trainers": 2}, **common)}
    c.wait_for_nodes()
    ensure_ray(c.address)
    yield {name: node.node_id for name, node in nodes.items()} | {"head": c.head_node.node_id}
    ray.shutdown()
    c.shutdown()
    del os.environ[STEP_DELAY_ENV]


def _config(storage: Path, name: str, *extra: str) -> Any:
    return load_config(None, [*NML, f"dist.storage_path={storage}", f"dist.run_name={name}",
                              *extra])


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _actors(class_name: str) -> list[dict]:
    """Every actor of the cluster (dead ones too) whose class is ``class_name``."""
    from ray._private.state import actors

    return [a for a in actors().values() if a.get("ActorClassName") == class_name]


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def local(cluster, storage) -> tuple[dict, list[dict]]:
    """The reference: the same 2-worker job without shards (each worker loads the graph)."""
    result = train_distributed(_config(storage, "local"))
    return result, _records(storage / "local")


@pytest.fixture(scope="module")
def sharded(cluster, storage) -> tuple[dict, list[dict], set[str], dict[str, Any]]:
    """The job with the graph in 2 shards on the shards node, one of whose actors is SIGKILLed
    by its pid once the step-2 checkpoint exists (one job for both checks: the suite is near its
    time budget); the ids of the job's actors and what was killed."""
    run_dir = storage / "sharded"
    before = {a["ActorID"] for a in _actors("GraphShardServer")}
    killed: dict[str, Any] = {}

    def job_shards() -> list[dict]:
        return [a for a in _actors("GraphShardServer")
                if a["ActorID"] not in before and a.get("State") == "ALIVE"]

    def kill_one_shard() -> None:
        wait_for(lambda: 2 in CheckpointManager(run_dir).steps() and len(job_shards()) == 2,
                 TIMEOUT, "the step-2 checkpoint")
        victim = job_shards()[1]
        killed.update(id=victim["ActorID"], pid=int(victim["Pid"]))
        os.kill(killed["pid"], signal.SIGKILL)

    thread = threading.Thread(target=kill_one_shard, daemon=True)
    thread.start()
    result = train_distributed(_config(storage, "sharded", *SHARDED))
    thread.join(timeout=5)
    ids = {a["ActorID"] for a in _actors("GraphShardServer")} - before
    return result, _records(run_dir), ids, killed


def _same_losses(records: list[dict], want: list[dict]) -> None:
    assert [r["epoch"] for r in records] == [r["epoch"] for r in want] == [1, 2]
    for key in ("loss", "anchors"):
        assert [r[key] for r in records] == pytest.approx([r[key] for r in want], rel=1e-6,
                                                          abs=1e-9), key


def test_shards_and_workers_run_on_their_own_nodes(cluster, sharded) -> None:
    result, records, ids, _ = sharded
    assert len(ids) == 2
    shard_nodes = {a["Address"]["NodeID"] for a in _actors("GraphShardServer") if a["ActorID"] in ids}
    assert shard_nodes == {cluster["shards"]}
    workers = [a for a in _actors("RayTrainWorker") if a.get("State") == "DEAD"]
    assert len(workers) >= 2
    assert {a["Address"]["NodeID"] for a in workers} == {cluster["trainers"]}
    assert result["world_size"] == 2
    # every step asked the shards (another node) for its subgraphs and feature rows
    assert all(r["store_calls"] > 0 for r in records)


def test_two_node_sharded_job_gives_the_numbers_of_the_job_without_shards(local, sharded):
    import torch

    (ref, ref_records), (result, records, _, _) = local, sharded
    assert all(r["store_calls"] == 0 for r in ref_records)
    _same_losses(records, ref_records)
    # the sharded job's embeddings come from layer-wise inference on the shards: the same
    # encoder's embedding up to float32 summation order, which may flip a test node's
    # prediction, so its probe is compared to within one test node
    z, want = (torch.load(Path(r["run_dir"]) / "embeddings.pt", weights_only=True)
               for r in (result, ref))
    torch.testing.assert_close(z, want, atol=1e-5, rtol=0)
    one_node = 100.0 / ref["metrics"]["probe"]["split_sizes"][2]
    assert result["metrics"]["accuracy_mean"] == pytest.approx(
        ref["metrics"]["accuracy_mean"], abs=one_node + 1e-9)


def test_shard_killed_by_pid_mid_training_restarts_on_its_node(cluster, storage, sharded):
    """The kill landed before the last step and Ray restarted the actor on the shards node;
    the job's numbers equal the job without shards (the previous test): nothing lost or
    repeated."""
    killed = sharded[3]
    assert killed, "no shard actor was killed"
    steps = CheckpointManager(storage / "sharded").steps()
    assert steps and steps[-1] > 2  # the kill landed before the last step
    victim = next(a for a in _actors("GraphShardServer") if a["ActorID"] == killed["id"])
    assert victim["NumRestarts"] >= 1 and int(victim["Pid"]) != killed["pid"]
    assert victim["Address"]["NodeID"] == cluster["shards"]  # restarted where its resource is


def test_a_resource_the_cluster_lacks_fails_in_one_line(cluster, tmp_path) -> None:
    have = ray.cluster_resources()
    with pytest.raises(InfeasibleRequest, match=r"dist.worker_resources: 2 workers x 1 "
                       r"'gpu-nodes' need 2, but the Ray cluster has 0") as err:
        check_placement(_config(tmp_path, "x", "dist.worker_resources={gpu-nodes: 1}"), have)
    assert "\n" not in str(err.value)
    with pytest.raises(InfeasibleRequest, match=r"dist.shard_resources: 3 shard actors x 1 "
                       r"'shards' need 3, but the Ray cluster has 2"):
        train_distributed(_config(tmp_path, "y", "dist.shards=3",
                                  "dist.shard_resources={shards: 1}"))
    check_placement(_config(tmp_path, "z", *SHARDED), have)  # what the module's jobs ask


@pytest.mark.parametrize("bad, message", [
    ("dist.shard_resources={CPU: 1}", "dist.shard_resources names custom resources; 'CPU' is "
                                      "Ray's own"),
    ("dist.worker_resources={trainers: 0}", r"dist.worker_resources.trainers must be > 0"),
    ("dist.worker_resources=2", "dist.worker_resources must be a mapping")])
def test_placement_options_are_checked_in_one_line(bad, message) -> None:
    """No Ray: the config refuses Ray's own resource names and non-positive amounts."""
    from distgcl.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, [bad])
    assert load_config(None, SHARDED).dist.shard_resources == {"shards": 1.0}
