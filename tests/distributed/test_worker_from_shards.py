"""Ray Train workers that train from the job's graph shards never load the dataset: NML-GCL
mini-batch with ``dist.shards: P`` writes ``embeddings.pt`` computed layer by layer on the
shards (equal to the single-process embedding of the same encoder) and probes only the rows it
scores (the same metrics as the local probe on the same embeddings).

Ray runs once for the module on 127.0.0.1; run it inside a private network namespace:

    unshare -n sh -c 'ip link set lo up; python -m pytest tests/distributed/test_worker_from_shards.py -q'
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

ray = pytest.importorskip("ray")

from distgcl.config import load_config  # noqa: E402
from distgcl.data import load_from_config  # noqa: E402
from distgcl.data.csbm import csbm_graph  # noqa: E402
from distgcl.data.splits import index_to_mask  # noqa: E402
from distgcl.distributed.inference import column_stats, copy_rows, read_rows  # noqa: E402
from distgcl.eval import clustering_scores  # noqa: E402
from distgcl.export import load_encoder, node_embeddings  # noqa: E402
import distgcl.methods  # noqa: E402,F401 (registers the methods' config sections)
from distgcl.protocols import probe_embeddings, probe_scored_rows  # noqa: E402

N, SCORED = 400, 240  # a fixed split over 240 of the 400 nodes: the probe reads only those


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory) -> Path:
    """A CSBM graph saved as a ``file`` dataset with train/val/test masks over 240 nodes."""
    data = csbm_graph(N, 4, 0.8, 6.0, 16, 1.0, seed=5)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(7))
    masks = {k: index_to_mask(perm[lo:hi], N) for k, (lo, hi) in
             {"train_mask": (0, 80), "val_mask": (80, 140), "test_mask": (140, SCORED)}.items()}
    path = tmp_path_factory.mktemp("graph") / "csbm-file.pt"
    torch.save(Data(x=data.x, edge_index=data.edge_index, y=data.y, num_nodes=N, **masks), path)
    return path


NML = ["method=nml", "model.proj_dim=0", "model.out_dim=16", "model.hidden_dim=16",
       "model.activation=rrelu", "model.activate_last=false", "nml.mode=minibatch",
       "nml.batch_size=50", "nml.num_negatives=40", "nml.num_neighbors=[5,5]",
       "nml.sampler=torch", "nml.inner_steps=1", "train.epochs=1", "train.threads=1",
       "train.progress=false", "eval.probe_seeds=2", "eval.clustering_runs=1",
       "dist.checkpoint_every=100"]


def _config(graph_file: Path, tmp: Path, name: str, *extra: str):
    return load_config(None, [*NML, "data.name=file", f"data.path={graph_file}",
                              f"data.cache={tmp / 'cache'}", f"dist.storage_path={tmp}",
                              f"dist.run_name={name}", *extra])


@pytest.fixture(scope="module")
def job(ray_session, graph_file, tmp_path_factory):
    """One 2-worker NML job with the graph in 2 shards."""
    from distgcl.distributed.trainer import train_distributed

    tmp = tmp_path_factory.mktemp("runs")
    config = _config(graph_file, tmp, "p2", "dist.num_workers=2", "dist.shards=2",
                     "eval.save_embeddings_npy=true")
    result = train_distributed(config)
    return config, result, tmp / "p2"


def test_workers_train_from_the_shards_without_loading_the_graph(job):
    _, result, run_dir = job
    assert result["graph"] == {"backend": "sharded", "worker_loaded_dataset": False}
    assert result["world_size"] == 2
    assert result["outputs"]["inference"]["shards"] == 2
    assert result["outputs"]["embeddings"] == ["embeddings.pt", "embeddings.npy"]
    assert (run_dir / "encoder.pt").is_file()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["store_calls"] > 0 for r in records)  # batches came from the store


def test_embeddings_equal_the_single_process_embedding_of_the_encoder(job):
    config, _, run_dir = job
    z = torch.load(run_dir / "embeddings.pt", weights_only=True)
    data = load_from_config(config.data, seed=config.train.seed).data
    want = node_embeddings(load_encoder(run_dir).encoder, data)
    assert z.shape == want.shape == (N, 16)
    torch.testing.assert_close(z, want, atol=1e-5, rtol=0)
    import numpy as np

    assert np.array_equal(np.load(run_dir / "embeddings.npy"), z.numpy())


def test_probe_and_clustering_equal_the_local_evaluation_of_the_same_embeddings(job):
    config, result, run_dir = job
    metrics = result["metrics"]
    assert metrics["probe"]["rows_read"] == SCORED
    z = torch.load(run_dir / "embeddings.pt", weights_only=True)
    dataset = load_from_config(config.data, seed=config.train.seed)
    probe, settings = probe_embeddings(z, dataset, config.eval, config.train.seed)
    assert metrics["accuracy_per_seed"] == probe.scores
    assert metrics["probe"]["best_c"] == settings["best_c"]
    assert metrics["probe"]["split_sizes"] == settings["split_sizes"]
    want = clustering_scores(z, dataset.data.y, dataset.num_classes, 1, seed=config.train.seed)
    assert {k: metrics[k] for k in want} == want
    assert "false_negative" in metrics["skipped"]


@pytest.mark.parametrize("protocol", ["nml-public", "nml-public+standardize"])
def test_probe_on_the_scored_rows_equals_the_probe_on_every_row(graph_file, tmp_path,
                                                                 protocol):
    """No Ray: the row-restricted probe (Adam probe; a column-standardized one, whose statistics
    come from every row of the file: the unscored rows are scaled up so that the scored rows'
    own statistics would differ) gives the numbers of the probe on the whole ``z``."""
    name, *norm = protocol.split("+")
    config = _config(graph_file, tmp_path, "x", f"eval.protocol={name}", "eval.probe_epochs=40",
                     *([f"eval.normalize={norm[0]}"] if norm else []))
    dataset = load_from_config(config.data, seed=0)
    z = torch.randn(N, 8, generator=torch.Generator().manual_seed(1)) + dataset.data.y[:, None]
    z[~(dataset.data.train_mask | dataset.data.val_mask | dataset.data.test_mask)] *= 30.0
    path = tmp_path / "z.pt"
    torch.save(z, path)
    want, _ = probe_embeddings(z, dataset, config.eval, 3)
    got, settings, rows = probe_scored_rows(
        lambda ids: (read_rows(path, ids), dataset.data.y[ids]), dataset.info(), config.eval, 3,
        column_stats=lambda: column_stats(path, chunk_rows=64))
    assert (got.scores, got.best_c, got.predicted_classes) == \
        (want.scores, want.best_c, want.predicted_classes)
    assert settings["rows_read"] == rows.shape[0] == SCORED


def test_column_stats_and_copy_rows_stream_the_file(tmp_path):
    z = torch.randn(300, 5, generator=torch.Generator().manual_seed(2)) * 3 + 1
    torch.save(z, tmp_path / "z.pt")
    mean, std = column_stats(tmp_path / "z.pt", chunk_rows=64)
    torch.testing.assert_close(mean, z.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, z.std(0), atol=1e-5, rtol=0)
    out = copy_rows(tmp_path / "z.pt", tmp_path / "z.npy", chunk_rows=64)
    import numpy as np

    assert np.array_equal(np.load(out), z.numpy())


# ----------------------------------------------------------- P = 1, one process, no Ray Train

@pytest.fixture(scope="module")
def one_shard(ray_session, graph_file, tmp_path_factory):
    """The job's single shard actor (as the driver starts it) and a one-process runtime that
    hands it to the loop, as a Ray Train worker's runtime does."""
    from distgcl.distributed.services import JobShards, graph_services_from_handoff
    from distgcl.runtime import Runtime

    tmp = tmp_path_factory.mktemp("one-shard")
    shards = JobShards.start(_config(graph_file, tmp, "p1", "dist.shards=1"), tmp / "cache")

    class ShardRuntime(Runtime):
        handoff = shards.handoff()

        def graph_services(self, config, cache_root):  # type: ignore[no-untyped-def]
            return graph_services_from_handoff(shards.handoff(), 1, cache_root)

    yield tmp, ShardRuntime
    shards.shutdown()


def test_one_shard_run_equals_the_local_run(graph_file, one_shard):
    """P = 1 in one process: the losses, ``embeddings.pt`` (to 1e-5) and probe of the run
    from the shard equal those of the run that loads the graph."""
    from distgcl.train import run_training

    tmp, runtime = one_shard
    local = run_training(_config(graph_file, tmp, "local"), tmp / "local")
    sharded = run_training(_config(graph_file, tmp, "p1", "dist.shards=1"), tmp / "p1",
                           runtime(tmp / "p1"))
    assert local["graph"] == {"backend": "local", "worker_loaded_dataset": True}
    assert sharded["graph"] == {"backend": "sharded", "worker_loaded_dataset": False}
    # the driver streamed the file graph into the shard (no process loaded it) and says so
    handoff = pickle.loads(pickle.dumps(runtime.handoff))  # what travels to the workers
    assert handoff["partitioned_from"] == "stream" and handoff["driver_peak_rss_mb"] > 0
    assert handoff["dataset_info"].split == "file"
    losses = [json.loads(line)["loss"] for run in ("local", "p1")
              for line in (tmp / run / "metrics.jsonl").read_text().splitlines()]
    assert losses[:len(losses) // 2] == losses[len(losses) // 2:]
    z = torch.load(tmp / "p1" / "embeddings.pt", weights_only=True)
    torch.testing.assert_close(z, torch.load(tmp / "local" / "embeddings.pt", weights_only=True),
                               atol=1e-5, rtol=0)
    # the probe of these embeddings is the local probe of them; the local run's own embeddings
    # differ in float rounding (another summation order), which may flip a test node or two
    config = _config(graph_file, tmp, "local")
    probe, _ = probe_embeddings(z, load_from_config(config.data, seed=config.train.seed),
                               config.eval, config.train.seed)
    assert sharded["metrics"]["accuracy_per_seed"] == probe.scores
    one_node = 100.0 / (SCORED - 140)
    assert sharded["metrics"]["accuracy_per_seed"] == \
        pytest.approx(local["metrics"]["accuracy_per_seed"], abs=2 * one_node + 1e-9)


def test_a_method_that_cannot_train_from_the_store_loads_the_graph(graph_file, one_shard,
                                                                   capsys):
    """GRACE full batch needs the whole graph: the worker loads it and says why in one line."""
    from distgcl.train import run_training

    tmp, runtime = one_shard
    config = _config(graph_file, tmp, "grace", "method=grace", "model.proj_dim=8",
                     "dist.shards=1", "train.epochs=2", "eval.clustering=false")
    result = run_training(config, tmp / "grace", runtime(tmp / "grace"))
    assert result["graph"] == {"backend": "local", "worker_loaded_dataset": True}
    assert "cannot train from the graph store" in capsys.readouterr().out
    probe = result["metrics"]["probe"]
    assert probe["seeds"] == 2 and "rows_read" not in probe  # the probe of the whole z
