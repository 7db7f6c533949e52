"""DDP really synchronises: one step on 2 gloo ranks with different batches leaves identical
parameters on both ranks, equal to one single-process step with the mean gradient of the two
batches (an independent replay of the step below), and different from a step on either batch."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import ddp_ranks  # noqa: E402

from distgcl.losses import nml_loss  # noqa: E402


def _run_ranks(kind: str, out: Path, world: int = 2) -> None:
    """``ddp_ranks.rank_main`` on ``world`` spawned processes, bounded in time: a rank that
    raises or exits non-zero fails the test with its error (``join`` raises); ranks still alive
    after the deadline are killed."""
    ranks = mp.start_processes(ddp_ranks.rank_main, args=(world, kind, str(out)), nprocs=world,
                               join=False, start_method="spawn")
    deadline = time.monotonic() + ddp_ranks.RANK_TIMEOUT_S + 60
    while not ranks.join(timeout=2):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            saved = sorted(p.name for p in out.glob("rank*.pt"))
            pytest.fail(f"{kind}: ranks still running after {ddp_ranks.RANK_TIMEOUT_S + 60} s "
                        f"(parameters saved: {saved or 'none'})")


def _replay(kind: str, ranks: list[int], world: int = 2) -> dict[str, torch.Tensor]:
    """Single process: the step of ``world`` ranks replayed with the gradients of the ranks in
    ``ranks`` summed (each rank's loss is its anchors' sum over the global anchor count)."""
    methods = [ddp_ranks.build(kind, r, world) for r in range(world)]
    ref, data = methods[0]
    for m, _ in methods[1:]:  # one set of parameters; each rank keeps its own random streams
        m.model = ref.model
        if getattr(ref, "nmn", None) is not None:
            m.nmn = ref.nmn
    batches = [ddp_ranks.first_batch(m, d) for m, d in methods]
    views = []
    for (m, _), batch in zip(methods, batches):
        m.train()
        if kind == "grace":
            views.append(m.views(batch[0]))
        elif kind == "nml":
            u, v = m.views(batch.x, batch.edge_index)
            views.append((u[:batch.num_seeds], v[:batch.num_seeds]))
        else:
            views.append(m.views(batch[0]))
    if kind == "grace":
        opt = ref.optimizers["model"]
        opt.zero_grad()
        for r in ranks:
            methods[r][0].loss(*views[r], batches[r][1]).backward(retain_graph=True)
        opt.step()
    else:
        enc_opt = ref.optimizers["encoder" if kind == "nml" else "model"]
        nmn_opt = ref.optimizers["nmn"]
        inner = ref.cfg.inner_steps if kind == "nml" else ref.cfg.nml_inner_steps

        def rank_loss(r: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            m, batch = methods[r][0], batches[r]
            if kind == "nml":
                return m.loss(u, v, batch.anchor_ids, batch.candidate_ids,
                              normalizer=batch.total)[0]
            share = batch[1]
            return nml_loss(u, v, ref.nmn(u, v), ref.cfg.tau, ref.cfg.nml_c,
                            anchor_ids=share.ids, normalizer=share.total)[0]

        for _ in range(inner):
            nmn_opt.zero_grad()
            for r in ranks:
                rank_loss(r, views[r][0].detach(), views[r][1].detach()).backward()
            nmn_opt.step()
        enc_opt.zero_grad()
        for r in ranks:
            rank_loss(r, *views[r]).backward(retain_graph=True)
        enc_opt.step()
    return {k: v.detach().clone() for k, v in ref.named_parameters()}


@pytest.mark.parametrize("kind", ["grace", "nml", "e2neg+nml"])
def test_two_rank_step_equals_mean_gradient_step(kind: str, tmp_path: Path) -> None:
    _run_ranks(kind, tmp_path)
    p0, p1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"{kind}: {k} differs between ranks"
    both = _replay(kind, [0, 1])
    alone = [_replay(kind, [r]) for r in (0, 1)]
    before = {k: v.detach() for k, v in ddp_ranks.build(kind, 0, 2)[0].named_parameters()}
    # the method's own names: DDP wrapping leaves the state dict untouched
    assert both.keys() == p0.keys()
    for k in p0:
        torch.testing.assert_close(p0[k], both[k], atol=1e-5, rtol=1e-5,
                                   msg=lambda m, k=k: f"{kind}: {k}: {m}")
    moved = [k for k in p0 if not torch.equal(p0[k], before[k])]
    assert moved, "the step changed nothing"
    if kind != "grace":  # both optimizers stepped
        assert any(k.startswith("nmn.") for k in moved) and any(k.startswith("model.")
                                                                for k in moved)
    for one in alone:  # a step on one rank's batch alone is a different step
        assert max((p0[k] - one[k]).abs().max().item() for k in moved) > 1e-4
