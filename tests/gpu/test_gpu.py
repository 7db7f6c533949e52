"""GPU runs (``@pytest.mark.gpu``: skipped without CUDA, see tests/conftest.py).

Each method for two epochs on ``cuda`` in one process, embedded and probed on the GPU; a CPU
checkpoint resumed on the GPU; a Ray Train run with one GPU worker killed and resumed; a
2-worker NCCL run when the machine has two GPUs. ``bench/gpu.sh`` runs this file on a GPU machine.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import distgcl.protocols
from distgcl.config import load_config
from distgcl.checkpoint import CheckpointManager
from distgcl.train import run_training
from killing import kill_rank_after_checkpoint

pytestmark = pytest.mark.gpu

SMALL = ["data.name=csbm", "data.csbm.num_nodes=600", "data.csbm.num_features=16",
         "data.csbm.num_classes=4", "model.out_dim=16", "train.progress=false",
         "train.lr=0.005", "eval.probe=adam", "eval.probe_seeds=3", "eval.probe_epochs=100",
         "eval.clustering_runs=1"]
METHODS = {
    "grace": ["method=grace", "model.proj_dim=16"],
    "nml": ["method=nml", "model.proj_dim=0", "model.hidden_dim=16", "model.activation=rrelu",
            "model.activate_last=false", "nml.mode=minibatch", "nml.batch_size=100",
            "nml.num_negatives=40", "nml.num_neighbors=[5,5]", "nml.inner_steps=2"],
    "e2neg": ["method=e2neg", "model.layers=1", "model.proj_dim=16", "e2neg.clusters=8",
              "e2neg.num_neighbors=20", "e2neg.min_neighbors=10"],
}
TIMEOUT = 300  # seconds any single Ray run may take


def _config(method: str, *extra: str):
    return load_config(None, [*SMALL, *METHODS[method], *extra])


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def probe_devices(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """The device every Adam probe of the test trained on."""
    seen: list[torch.device] = []
    real = distgcl.protocols.linear_probe

    def spy(*args: Any, device: Any = None, **kwargs: Any):  # type: ignore[no-untyped-def]
        seen.append(torch.device(device) if device is not None else args[0].device)
        return real(*args, device=device, **kwargs)

    monkeypatch.setattr(distgcl.protocols, "linear_probe", spy)
    return seen


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_epochs_on_cuda_embed_and_probe_on_gpu(method: str, tmp_path: Path,
                                                   probe_devices: list[torch.device]) -> None:
    torch.cuda.reset_peak_memory_stats()
    result = run_training(_config(method, "train.device=cuda", "train.epochs=2"), tmp_path)
    assert [e["epoch"] for e in _epochs(tmp_path)] == [1, 2]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in _epochs(tmp_path))
    z = torch.load(tmp_path / "embeddings.pt")
    assert z.shape == (600, 16) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert 0.0 < result["metrics"]["accuracy_mean"] <= 100.0
    assert [d.type for d in probe_devices] == ["cuda"]
    assert torch.cuda.max_memory_allocated() > 0  # the run really used the GPU


def test_embeddings_on_gpu_match_cpu(tmp_path: Path) -> None:
    """The full-graph sparse embedding (``normalized_operator``) on CUDA equals the CPU one."""
    from distgcl.data import load_from_config
    from distgcl.export import load_encoder, node_embeddings

    config = _config("grace", "train.device=cuda", "train.epochs=1")
    run_training(config, tmp_path)
    encoder = load_encoder(tmp_path).encoder
    data = load_from_config(config.data, config.train.seed).data
    cpu = node_embeddings(encoder, data)
    gpu = node_embeddings(encoder.to("cuda"), data.to("cuda"))
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)


def test_cpu_checkpoint_resumes_on_gpu(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs on the CPU (checkpointed, as a machine without CUDA writes it), then the same
    run directory on ``cuda`` to four: weights and optimizers carry over, the CUDA RNG and the
    CUDA augmentation generator restart from the seed and say so in one line each."""
    extra = ["train.checkpoint_every=3"]  # 600 nodes / batch 100: 6 steps an epoch
    with monkeypatch.context() as cpu_only:  # the checkpoint of a CPU-only machine
        cpu_only.setattr(torch.cuda, "is_available", lambda: False)
        run_training(_config("nml", "train.device=cpu", "train.epochs=2", *extra), tmp_path)
    assert CheckpointManager(tmp_path / "checkpoints").steps()[-1] == 12
    capsys.readouterr()
    result = run_training(_config("nml", "train.device=cuda", "train.epochs=4", *extra), tmp_path)
    out = capsys.readouterr().out
    assert "cuda RNG: checkpoint has 0 devices, this run" in out
    assert "augment_generator: checkpoint state is from another device type" in out
    assert [e["epoch"] for e in _epochs(tmp_path)] == [1, 2, 3, 4]
    assert result["epochs_run"] == 4 and 0.0 < result["metrics"]["accuracy_mean"] <= 100.0


# ----------------------------------------------------------------------------- Ray Train

@pytest.fixture(scope="module")
def ray_gpu(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    from distgcl.distributed.trainer import HEALTH_CHECK_ENV

    os.environ.setdefault(HEALTH_CHECK_ENV, "0.25")
    ray.init(num_cpus=4, num_gpus=torch.cuda.device_count(), include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


def _ray_config(storage: Path, name: str, workers: int, *extra: str):
    return _config("nml", "train.epochs=4", "train.threads=1", f"dist.num_workers={workers}",
                   "dist.use_gpu=true", "dist.checkpoint_every=4", "dist.max_failures=2",
                   f"dist.storage_path={storage}", f"dist.run_name={name}", *extra)


def test_ray_gpu_worker_killed_resumes(ray_gpu, tmp_path: Path) -> None:  # type: ignore
    from distgcl.distributed.trainer import train_distributed

    clean = train_distributed(_ray_config(tmp_path, "clean", 1))
    assert clean["world_size"] == 1 and clean["device"].startswith("cuda")
    run_dir = tmp_path / "killed"
    with kill_rank_after_checkpoint(run_dir, rank=0, step=8, timeout=TIMEOUT):
        result = train_distributed(_ray_config(tmp_path, "killed", 1))
    epochs, want = _epochs(run_dir), _epochs(tmp_path / "clean")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4]  # each epoch exactly once
    # CUDA scatter-adds are not bitwise deterministic: equal up to float rounding
    for got, ref in zip(epochs, want):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-3)
    assert result["metrics"]["accuracy_mean"] == pytest.approx(
        clean["metrics"]["accuracy_mean"], abs=2.0)


@pytest.mark.gpu(count=2)
def test_two_gpu_workers_nccl(ray_gpu, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from distgcl.distributed.trainer import train_distributed

    result = train_distributed(_ray_config(tmp_path, "nccl", 2))
    assert result["world_size"] == 2 and result["backend"] == "nccl"
    assert result["device"].startswith("cuda")
    assert [e["epoch"] for e in _epochs(tmp_path / "nccl")] == [1, 2, 3, 4]
    assert 0.0 < result["metrics"]["accuracy_mean"] <= 100.0
