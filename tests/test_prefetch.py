"""Batch prefetching (distgcl.prefetch): same numbers, errors surface, threads stop, pinning."""
from __future__ import annotations

import json
import random
import threading
import traceback
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

import distgcl.prefetch as prefetch
from distgcl.config import ConfigError, load_config
from distgcl.data import load_dataset
from distgcl.methods import GraphInfo, build_method
from distgcl.methods.nml import NMLBatch
from distgcl.prefetch import Inline, Prefetcher, batch_to, method_batches, pin_batch
from distgcl.train import run_training

SMALL = ["data.name=csbm", "data.csbm.num_nodes=300", "data.csbm.num_features=16",
         "model.out_dim=16", "model.hidden_dim=16", "train.progress=false", "train.epochs=2",
         "eval.probe_seeds=1", "eval.probe_epochs=20", "eval.clustering=false"]
PREFETCHED = {
    "nml-minibatch": ["method=nml", "model.proj_dim=0", "model.activation=rrelu",
                      "model.activate_last=false", "nml.mode=minibatch", "nml.batch_size=64",
                      "nml.num_negatives=48", "nml.num_neighbors=[5,5]", "nml.inner_steps=2",
                      "nml.sampler=torch"],
    "grace-parts": ["method=grace", "model.proj_dim=16", "model.activation=rrelu",
                    "grace.batching=parts", "grace.num_parts=4"],
}


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "distgcl-prefetch"]


# ---------------------------------------------------------------------- the prefetcher itself
def test_items_in_order_and_snapshot_of_the_consumed_item() -> None:
    drawn = []

    def source() -> Iterator[int]:
        for i in range(6):
            drawn.append(i)
            yield i

    with Prefetcher(source(), depth=2, snapshot=lambda: len(drawn)) as items:
        for i, item in enumerate(items):
            assert item == i
            assert items.state == i + 1  # drawn so far when item i was made, not now
    assert not _threads()


def test_exception_in_the_sampler_surfaces_with_its_traceback() -> None:
    def broken_sampler() -> Iterator[int]:
        yield 0
        raise ValueError("sampler exploded")

    items = Prefetcher(broken_sampler())
    assert next(items) == 0
    with pytest.raises(ValueError, match="sampler exploded") as info:
        next(items)
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "broken_sampler" in frames  # the producer thread's frame is kept
    assert not items.alive


@pytest.mark.parametrize("depth", [1, 2])
def test_early_break_stops_the_thread_and_closes_the_source(depth: int) -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    def consume() -> None:
        with Prefetcher(endless(), depth=depth) as items:
            for item in items:
                if item == 2:
                    break

    runner = threading.Thread(target=consume, daemon=True)  # a hung close() fails, not hangs
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "close() did not return"
    assert closed.is_set() and not _threads()


def test_exception_in_the_consumer_stops_the_thread() -> None:
    with pytest.raises(RuntimeError, match="step failed"):
        with Prefetcher(iter(range(10**6))) as items:
            for _ in items:
                raise RuntimeError("step failed")
    assert not items.alive and not _threads()


def test_the_thread_runs_without_autograd() -> None:
    w = torch.ones(2, requires_grad=True)

    def source() -> Iterator[torch.Tensor]:
        yield w * 2

    with Prefetcher(source()) as items:
        assert not next(items).requires_grad


def test_depth_is_checked() -> None:
    with pytest.raises(ValueError, match="depth must be 1 or 2"):
        Prefetcher(iter([]), depth=3)


# ---------------------------------------------------------------------- pinned copies
def _nml_batch() -> NMLBatch:
    return NMLBatch(x=torch.randn(5, 3), edge_index=torch.tensor([[0, 1], [1, 2]]), num_seeds=3,
                    anchor_ids=torch.tensor([0, 1]), candidate_ids=torch.tensor([2]),
                    n_id=torch.arange(5), total=2)


def test_pinning_is_a_no_op_off_cuda() -> None:
    batch = (_nml_batch(), {"ids": torch.arange(3)})
    assert pin_batch(batch, torch.device("cpu")) is batch
    assert pin_batch(batch, torch.device("meta")) is batch
    assert pin_batch(batch, None) is batch


def test_batch_to_moves_every_tensor() -> None:
    moved = batch_to((_nml_batch(), [torch.zeros(2)], {"k": torch.ones(1)}, 7), "meta")
    assert moved[0].x.device.type == moved[0].n_id.device.type == "meta"
    assert moved[1][0].device.type == moved[2]["k"].device.type == "meta" and moved[3] == 7
    step = _nml_batch().to(torch.device("meta"))  # what the NML step reads; n_id stays
    assert {step.x.device.type, step.edge_index.device.type, step.anchor_ids.device.type,
            step.candidate_ids.device.type} == {"meta"} and step.n_id.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (page-locked memory)")
def test_pinning_on_cuda() -> None:
    cuda = torch.device("cuda")
    pinned = pin_batch((_nml_batch(), torch.arange(4)), cuda)
    assert pinned[0].x.is_pinned() and pinned[0].edge_index.is_pinned()
    assert pinned[1].is_pinned()
    on_gpu = pinned[0].to(cuda)
    torch.cuda.synchronize()
    assert on_gpu.x.is_cuda and torch.equal(on_gpu.x.cpu(), pinned[0].x)


# ---------------------------------------------------------------------- methods and the loop
def _method(name: str, *extra: str):  # type: ignore[no-untyped-def]
    config = load_config(None, [*SMALL, *PREFETCHED[name], *extra])
    data = load_dataset("csbm", seed=0, csbm=config.data.csbm).data
    torch.manual_seed(0)
    method = build_method(config, GraphInfo(data.num_nodes, data.num_features, 4))
    method.configure_optimizers()
    return method, data


@pytest.mark.parametrize("name", sorted(PREFETCHED))
def test_prefetchable_batches_draw_no_global_random_numbers(name: str) -> None:
    """The contract of Method.prefetch_batches: the main thread's noise stream is untouched."""
    method, data = _method(name)
    assert method.prefetch_batches
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    for epoch in (1, 2):
        assert sum(1 for _ in method.batches(data, epoch)) == method.steps_per_epoch(data)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]


@pytest.mark.parametrize("extra", [["nml.sampler=pyg"], ["nml.mode=full"]])
def test_global_stream_or_full_batch_methods_run_inline(extra: list[str]) -> None:
    method, data = _method("nml-minibatch", *extra)
    assert not method.prefetch_batches
    assert isinstance(method_batches(method, data, 1, prefetch=True), Inline)


def _run(tmp: Path, name: str, on: bool) -> tuple[list[float], torch.Tensor]:
    config = load_config(None, [*SMALL, *PREFETCHED[name], f"train.prefetch={str(on).lower()}"])
    run_training(config, tmp)
    losses = [json.loads(line)["loss"] for line in (tmp / "metrics.jsonl").read_text().splitlines()]
    weights = torch.load(tmp / "encoder.pt", weights_only=True)["state_dict"]
    return losses, torch.cat([w.flatten() for w in weights.values()])


@pytest.mark.parametrize("name", sorted(PREFETCHED))
def test_prefetch_on_and_off_give_the_same_run(tmp_path: Path, name: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    real = prefetch.Prefetcher

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prefetch, "Prefetcher", counting)
    off = _run(tmp_path / "off", name, False)
    assert not started
    on = _run(tmp_path / "on", name, True)
    assert len(started) == 2  # one thread per epoch
    assert on[0] == off[0]
    assert torch.equal(on[1], off[1])
    assert not _threads()


def test_prefetch_switch_is_validated() -> None:
    assert load_config(None, []).train.prefetch is True
    with pytest.raises(ConfigError, match="prefetch"):
        load_config(None, ["train.prefetch=5"])


# ---------------------------------------------------------------------- full-graph embedding
def test_embedding_chunks_fit_the_free_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from distgcl.export import EMBED_MEMORY_FRACTION, EMBED_TEMPORARIES, embed_rows
    from distgcl.nn import GCNEncoder

    encoder = GCNEncoder(32, 16, 64, 2)  # widest layer: 64
    assert embed_rows(encoder, 1000, 0, torch.device("cpu")) == 0  # CPU: as configured
    assert embed_rows(encoder, 1000, 300, torch.device("cpu")) == 300
    free = 10 * 2**20
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 8 * free))
    fit = int(EMBED_MEMORY_FRACTION * free) // (EMBED_TEMPORARIES * 64 * 4)
    cuda = torch.device("cuda", 0)
    assert embed_rows(encoder, 10**6, 0, cuda) == fit  # all rows asked, the memory caps
    assert embed_rows(encoder, 10**6, 100, cuda) == 100  # a smaller request is kept
    assert embed_rows(encoder, 50, 0, cuda) == 50


def test_gathered_embeddings_are_float32_host_rows() -> None:
    from distgcl.export import gather_rows

    z = torch.randn(7, 3, dtype=torch.float64)
    out = gather_rows(z, 2)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, z.float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gather_from_the_gpu_chunk_by_chunk() -> None:
    from distgcl.export import gather_rows

    z = torch.randn(1001, 5, device="cuda")
    out = gather_rows(z, 100)
    assert out.device.type == "cpu" and torch.equal(out, z.cpu())
