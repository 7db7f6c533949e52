"""DDP really synchronises: one step on 2 gloo ranks with different batches leaves identical
parameters on both ranks, equal to one single-process step with the mean gradient of the two
batches (an independent replay of the step below), and different from a step on either batch."""
from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import ddp_ranks  # noqa: E402

from distgcl.losses import nml_loss  # noqa: E402


def _run_ranks(kind: str, out: Path, world: int = 2, main=ddp_ranks.rank_main) -> None:
    """``main`` (default ``ddp_ranks.rank_main``) on ``world`` spawned processes, bounded in
    time: a rank that raises or exits non-zero fails the test with its error (``join`` raises);
    ranks still alive after the deadline are killed. ``kind=None``: ``main(rank, world, out)``."""
    args = (world, str(out)) if kind is None else (world, kind, str(out))
    ranks = mp.start_processes(main, args=args, nprocs=world, join=False, start_method="spawn")
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
    methods, states = [], []
    for r in range(world):  # each rank's global stream (RReLU) as the trainer seeds it
        methods.append(ddp_ranks.build(kind, r, world))
        states.append(torch.get_rng_state())

    @contextlib.contextmanager
    def stream(r: int):  # replay rank r's draws from rank r's own global stream
        torch.set_rng_state(states[r])
        yield
        states[r] = torch.get_rng_state()

    ref, data = methods[0]
    for m, _ in methods[1:]:  # one set of parameters; each rank keeps its own random streams
        m.model = ref.model
        if getattr(ref, "nmn", None) is not None:
            m.nmn = ref.nmn
    batches = [ddp_ranks.first_batch(m, d) for m, d in methods]
    views = []
    for r, ((m, _), batch) in enumerate(zip(methods, batches)):
        m.train()
        with stream(r):
            views.append(_views(kind, m, batch))
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
            with stream(r):
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


def _views(kind: str, m, batch):
    if kind == "nml":
        u, v = m.views(batch.x, batch.edge_index)
        return u[:batch.num_seeds], v[:batch.num_seeds]
    return m.views(batch[0])


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


@pytest.mark.parametrize("kind", ["grace", "e2neg+nml"])
def test_full_batch_two_ranks_equal_one_process_with_rrelu(kind: str, tmp_path: Path) -> None:
    """Full-batch objectives with the shipped RReLU: the 2-rank step is the single-process
    step, because the ranks draw the model noise from one shared stream."""
    _run_ranks(kind, tmp_path)
    ddp_ranks.single_step_main(kind, str(tmp_path))
    p0, single = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "single.pt")
    for k in p0:
        torch.testing.assert_close(p0[k], single[k], atol=1e-5, rtol=1e-5,
                                   msg=lambda m, k=k: f"{kind}: {k}: {m}")


def _checkpoints(folder: Path, steps: tuple[int, ...], damaged: tuple[int, ...] = ()) -> None:
    from distgcl.checkpoint import CheckpointManager

    manager = CheckpointManager(folder / "checkpoints", keep_latest_k=5)
    for step in steps:
        manager.save(step, {"step": step, "w": torch.full((64,), float(step))})
    for step in damaged:
        state = manager.path(step) / "state.pt"
        state.write_bytes(state.read_bytes()[:-9])


def test_ranks_resume_from_the_checkpoint_rank0_chose(tmp_path: Path) -> None:
    """Rank 0 sees the newest checkpoint damaged, rank 1 (another node's view of the storage)
    sees it intact: both resume from the one rank 0 chose."""
    _checkpoints(tmp_path / "rank0", (2, 4, 6), damaged=(6,))
    _checkpoints(tmp_path / "rank1", (2, 4, 6))
    _run_ranks(None, tmp_path, main=ddp_ranks.resume_rank_main)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got == [{"step": 4}, {"step": 4}]


def test_a_rank_that_cannot_read_the_chosen_checkpoint_stops_every_rank(tmp_path: Path) -> None:
    _checkpoints(tmp_path / "rank0", (2, 4))
    _checkpoints(tmp_path / "rank1", (2, 4), damaged=(4,))
    _run_ranks(None, tmp_path, main=ddp_ranks.resume_rank_main)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got[0] == got[1] and "rank 1 cannot read checkpoint step-4" in got[0]["error"]


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    """Mini-batch NML, DDP: rank 1 alone gets a NaN loss; both ranks stop at that step with the
    single-process message (none waits in the gradient all-reduce), last_good.pt is kept."""
    _run_ranks(None, tmp_path, main=ddp_ranks.diverge_rank_main)
    got = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert got[0] == got[1], got
    # the poisoned loss reaches the NMN's inner step first
    assert got[0].startswith("TrainingDiverged: epoch 2: NML metric-network loss became nan "
                             "(not finite); try a lower learning rate"), got[0]
    assert "last_good.pt" in got[0] and (tmp_path / "run" / "last_good.pt").is_file()
    epochs = [json.loads(line)["epoch"]
              for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1]
