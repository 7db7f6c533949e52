r"""NML-GCL (Zhao et al., IJCAI 2025, "Negative Metric Learning for Graphs"), full-batch and
mini-batched with sampled negative blocks.

Model: a GCN encoder :math:`f` (the paper: 2 GCN layers of 512, RReLU, no activation after the
last layer, no projection head) and a Negative Metric Network :math:`g`
(:class:`~distgcl.nn.nmn.NegativeMetricNetwork`) whose soft-maxed cosine similarities
:math:`m_{ij}` weight the InfoNCE negatives: :math:`w_{ij} = n_i m_{ij}`, plus
:math:`\alpha\,\mathrm{KL}(\mathrm{Unif} \| m_{i\cdot})` with :math:`\alpha = c\,n_i`
(:func:`distgcl.losses.nml_loss`).

**Bi-level schedule** (Algorithm 1 of the paper; one outer step per :meth:`NML.training_step`):

1. draw two views and compute :math:`U = f(G_U)`, :math:`V = f(G_V)` once;
2. :math:`T_M` NMN updates with the encoder fixed: the loss is evaluated on ``U.detach()``,
   ``V.detach()``, so its gradient reaches only :math:`g`; optimizer ``"nmn"`` steps;
3. one encoder update with the NMN fixed: the loss on :math:`U, V`, ``backward()``, and only
   optimizer ``"encoder"`` steps; the gradient :math:`g` received is discarded (zeroed).

Both levels minimize the same loss (min-min, as the paper and its code). The two optimizers each
own one parameter group: ``"encoder"`` = ``self.encoder.parameters()``, ``"nmn"`` =
``self.nmn.parameters()`` (absent for ``metric: cosine``, which has no parameters). Only plain
``backward()`` and ``step()`` are used: no ``torch.autograd.grad``, no ``requires_grad``
toggling, so both modules can be wrapped in DDP unchanged.

By default (``metric_grad_to_encoder: true``, as the official code) the encoder step's gradient
also flows *through* :math:`g` (frozen, but differentiable) into :math:`U, V`: the encoder is
also shaped by the :math:`m_{ij}` and KL terms. ``false`` computes :math:`m` from detached
embeddings in the encoder step, so the metric acts only as fixed weights.

Differences to the official code, all deliberate and documented:

* the positive is not a candidate (the issue's definition): :math:`n_i = N-1` candidates,
  :math:`w = (N-1)m`; ``include_positive: true`` reproduces the code's N-column layout;
* the two views' embeddings are computed once per outer step and reused by the :math:`T_M`
  inner steps (the encoder is fixed there; the code recomputes them, which differs only by
  RReLU's random training-mode slopes);
* two Adam optimizers (same lr and weight decay by default) instead of one shared Adam with
  ``requires_grad`` toggling; with torch >= 2 the toggled version skips frozen parameters too, so
  the updates are the same.

**Mini-batch mode** (``mode: minibatch``): each batch is B anchor nodes (a shuffled pass over
all nodes per epoch) and a block of K candidates (``negatives: uniform`` over all nodes, or
``within-batch``: the other anchors). Anchors and candidates are the seeds of one sampled
multi-hop subgraph (:mod:`distgcl.sampling`); the encoder runs on the two augmented copies of
that subgraph and the seed rows are the embeddings. The NMN and the loss see only the B x K
block: memory is O(B K + sampled subgraph), never O(N^2).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch
from torch import Tensor
from torch_geometric.data import Data

from distgcl.augment import augment_view
from distgcl.config import Config, ConfigError, check_at_least, check_positive
from distgcl.losses import BlockLogits, nml_block_logits, nml_loss
from distgcl.methods import register_method
from distgcl.methods.base import GraphInfo, Method
from distgcl.methods.bilevel import bilevel_step
from distgcl.methods.grace import build_encoder
from distgcl.nn import GCNEncoder, TwoViewEncoder
from distgcl.nn.nmn import build_metric_network, metric_log_probs
from distgcl.sampling import pyg_sampling_available, uniform_negatives
from distgcl.store import BaseGraphStore, LocalGraphStore
from distgcl.typing import NodeIds
from distgcl.work import STREAM_AUGMENT, STREAM_NEGATIVES, STREAM_SAMPLING, Work


@dataclass(kw_only=True)
class NMLConfig:
    """NML-GCL hyperparameters (the paper's per-dataset values: ``configs/<dataset>_nml.yaml``)."""

    tau: float = 0.5
    """InfoNCE temperature."""
    c: float = 0.1
    """KL coefficient: alpha = c * n_neg (n_neg: valid candidates per anchor; N-1 in full batch)."""
    alpha_scale: Literal["candidates", "graph"] = "candidates"
    """``candidates``: alpha = c * n_neg (the issue's definition; = c(N-1) in full batch).
    ``graph``: alpha = c * (N-1) in every mode (the full-batch value also for K-blocks)."""
    inner_steps: int = 3
    """T_M: NMN updates per encoder update."""
    metric: Literal["nmn", "signed", "cosine"] = "nmn"
    """``nmn``: the paper's learned metric (Siamese MLP, softmax of the cosine; it cannot
    down-weight anchor-like candidates, see :class:`~distgcl.nn.nmn.NegativeMetricNetwork`);
    ``signed``: the same with a learned signed inverse temperature on the cosine, which can
    (:class:`~distgcl.nn.nmn.SignedNegativeMetricNetwork`); ``cosine``: m = softmax of the plain
    cosine of the embeddings (ablation: no NMN, no inner steps)."""
    metric_scale_init: float = 0.0
    """``metric: signed``: the initial inverse temperature beta (0: uniform m, i.e. InfoNCE)."""
    metric_grad_to_encoder: bool = True
    """Encoder step backpropagates through the (fixed) NMN into the embeddings (official code)."""
    include_positive: bool = False
    """Official code's layout: the positive is also a (weighted) candidate, w = (N-1) m over N
    columns. Full batch, or mini-batch with ``negatives: within-batch``."""
    nmn_hidden_dim: int | None = None
    """Hidden width of g (default: model.out_dim, as the code)."""
    nmn_lr: float | None = None
    """NMN learning rate (default: train.lr; the code shares one Adam)."""
    nmn_weight_decay: float | None = None
    """NMN weight decay (default: train.weight_decay)."""
    mode: Literal["full", "minibatch"] = "full"
    """``full``: the paper's O(N^2) objective over all nodes; ``minibatch``: B x K blocks."""
    chunk_size: int = 0
    """Full batch: anchors per checkpointed chunk (0: one N x N block, as the code)."""
    batch_size: int = 1024
    """Mini-batch: anchors per batch (B)."""
    num_negatives: int = 1024
    """Mini-batch, ``negatives: uniform``: candidates per batch (K)."""
    negatives: Literal["uniform", "within-batch"] = "uniform"
    """Mini-batch candidate block: K nodes uniform over the graph, or the batch's other anchors."""
    num_neighbors: list[int] = field(default_factory=lambda: [10, 10])
    """Mini-batch fan-out per hop (-1: all); one entry per GCN layer."""
    sampler: Literal["auto", "pyg", "torch"] = "auto"
    """Neighbour sampler backend (see :func:`distgcl.sampling.make_neighbor_sampler`)."""
    batches_per_epoch: int = 0
    """Mini-batch: cap on batches per epoch (0: ceil(N / B), every node an anchor once)."""
    diagnostic_anchors: int = 1000
    """False-negative diagnostic: anchors sampled (O(anchors x candidates))."""
    diagnostic_candidates: int = 1000
    """False-negative diagnostic: candidates sampled."""

    def validate(self, prefix: str) -> None:
        check_positive(f"{prefix}.tau", self.tau)
        check_at_least(f"{prefix}.c", self.c, 0.0)
        check_at_least(f"{prefix}.inner_steps", self.inner_steps, 0)
        if self.nmn_hidden_dim is not None:
            check_at_least(f"{prefix}.nmn_hidden_dim", self.nmn_hidden_dim, 1)
        if self.nmn_lr is not None:
            check_positive(f"{prefix}.nmn_lr", self.nmn_lr)
        if self.nmn_weight_decay is not None:
            check_at_least(f"{prefix}.nmn_weight_decay", self.nmn_weight_decay, 0.0)
        check_at_least(f"{prefix}.chunk_size", self.chunk_size, 0)
        check_at_least(f"{prefix}.batch_size", self.batch_size, 2)
        check_at_least(f"{prefix}.num_negatives", self.num_negatives, 1)
        check_at_least(f"{prefix}.batches_per_epoch", self.batches_per_epoch, 0)
        check_at_least(f"{prefix}.diagnostic_anchors", self.diagnostic_anchors, 1)
        check_at_least(f"{prefix}.diagnostic_candidates", self.diagnostic_candidates, 2)
        if not self.num_neighbors or any(k == 0 or k < -1 for k in self.num_neighbors):
            raise ConfigError(f"{prefix}.num_neighbors must be a non-empty list of fan-outs "
                              f">= 1 or -1 (got {self.num_neighbors})")
        if (self.mode == "minibatch" and self.include_positive
                and self.negatives != "within-batch"):
            raise ConfigError(f"{prefix}.include_positive needs {prefix}.mode 'full' or "
                              f"{prefix}.negatives 'within-batch' (a uniform block need not "
                              "contain the positive)")


@dataclass
class NMLBatch:
    """One mini-batch: a sampled subgraph and the local ids of its anchors and candidates."""

    x: Tensor
    """``[n, F]`` features of the sampled nodes."""
    edge_index: Tensor
    """``[2, e]`` sampled edges, local ids."""
    num_seeds: int
    """The first ``num_seeds`` local nodes are the seeds (anchors and candidates)."""
    anchor_ids: NodeIds
    """``[B]`` local ids of the anchors (< num_seeds)."""
    candidate_ids: NodeIds
    """``[K]`` local ids of the candidates (< num_seeds)."""
    n_id: NodeIds
    """``[n]`` global ids of the sampled nodes."""
    total: int = 0
    """Anchors of this step over all ranks (the loss normaliser; 0: this batch's anchors)."""
    store_calls: int = 0
    """Round trips to the graph store this batch took (0 for an in-process graph)."""

    def to(self, device: torch.device) -> NMLBatch:
        """What the step reads, on ``device`` (``n_id`` stays where it is); asynchronous from
        pinned memory (:func:`distgcl.prefetch.pin_batch`), a no-op where it already is."""
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=True)

        return NMLBatch(x=move(self.x), edge_index=move(self.edge_index),
                        num_seeds=self.num_seeds, anchor_ids=move(self.anchor_ids),
                        candidate_ids=move(self.candidate_ids), n_id=self.n_id,
                        total=self.total, store_calls=self.store_calls)


@register_method("nml", NMLConfig)
class NML(Method):
    """NML-GCL on the :class:`~distgcl.methods.base.Method` interface (see the module docs)."""

    ddp_modules = ("model", "nmn")
    # make_batch draws from these two only (uniform_negatives, CSRNeighborSampler.sample)
    batch_generators = ("negatives_generator", "sampling_generator")

    def can_train_from_store(self) -> bool:
        return self.cfg.mode == "minibatch"  # full batch needs the whole graph's edges

    def __init__(self, config: Config, info: GraphInfo, work: Work | None = None) -> None:
        super().__init__(config, info, work)
        self.cfg: NMLConfig = config.section("nml")
        if self.cfg.mode == "minibatch" and len(self.cfg.num_neighbors) != config.model.layers:
            raise ConfigError(f"nml.num_neighbors needs one fan-out per GCN layer "
                              f"(model.layers={config.model.layers}, got {self.cfg.num_neighbors})")
        if config.model.proj_dim != 0:
            # NML-GCL has no projection head: the metric and the loss see the encoder output.
            raise ConfigError("nml needs model.proj_dim: 0 (NML-GCL has no projection head)")
        self.model = TwoViewEncoder(build_encoder(config, info))
        self.nmn = build_metric_network(self.cfg.metric, config.model.out_dim,
                                        self.cfg.nmn_hidden_dim,
                                        scale_init=self.cfg.metric_scale_init)
        full = self.cfg.mode == "full"
        # full batch: every rank draws the same two views (its rows then add up to the
        # single-process objective); mini-batch: each rank augments its own subgraphs
        self.augment_generator = self.work.generator(STREAM_AUGMENT, shared=full)
        self.shared_model_noise = full  # RReLU's slopes likewise
        self.negatives_generator = self.work.generator(STREAM_NEGATIVES, device="cpu")
        self.sampling_generator = self.work.generator(STREAM_SAMPLING, device="cpu")
        self.counters.update(inner_steps=0, outer_steps=0)
        self._store: BaseGraphStore | None = None
        self._graph_id: int | None = None

    @property
    def encoder(self) -> GCNEncoder:
        return self.model.encoder

    @property
    def prefetch_batches(self) -> bool:  # type: ignore[override]
        """Mini-batches are sampled on a background thread (:mod:`distgcl.prefetch`), except with
        PyG's compiled sampler, which ignores the generator and draws from a global stream."""
        c = self.cfg
        pyg = c.sampler == "pyg" or (c.sampler == "auto" and pyg_sampling_available())
        return c.mode == "minibatch" and not pyg

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``"encoder"`` owns the encoder parameters, ``"nmn"`` the NMN parameters (if any)."""
        t, c = self.config.train, self.cfg
        self.optimizers = {"encoder": torch.optim.Adam(self.model.parameters(), lr=t.lr,
                                                       weight_decay=t.weight_decay)}
        nmn_params = list(self.nmn.parameters())
        if nmn_params:
            self.optimizers["nmn"] = torch.optim.Adam(
                nmn_params, lr=c.nmn_lr if c.nmn_lr is not None else t.lr,
                weight_decay=c.nmn_weight_decay if c.nmn_weight_decay is not None
                else t.weight_decay)
        return self.optimizers

    # ------------------------------------------------------------------ batches
    def graph_store(self, data: Data | None) -> BaseGraphStore:
        """Where mini-batches come from: the trainer's store when it gives one (e.g. graph-shard
        actors), else an in-process :class:`~distgcl.store.LocalGraphStore` of ``data`` (built
        once per graph)."""
        store = self.work.services.store
        if store is not None:
            return store
        if data is None:
            raise ValueError("nml needs the graph (data) or a graph store from the trainer")
        if self._store is None or self._graph_id != id(data):
            self._store = LocalGraphStore(data, sampler=self.cfg.sampler)
            self._graph_id = id(data)
        return self._store

    def steps_per_epoch(self, data: Data | None) -> int:
        if self.cfg.mode == "full":
            return 1
        return self.work.steps_per_epoch(self.graph_store(data).num_nodes, self.cfg.batch_size,
                                         self.cfg.batches_per_epoch)

    def batches(self, data: Data | None, epoch: int, start_step: int = 0) -> Iterator[Any]:
        if self.cfg.mode == "full":
            if start_step == 0:
                assert data is not None
                yield data, self.work.share(torch.arange(data.num_nodes))
            return
        c = self.cfg
        store = self.graph_store(data)
        for share in self.work.epoch_batches(store.num_nodes, epoch, c.batch_size,
                                             max_steps=c.batches_per_epoch,
                                             start_step=start_step):
            yield self.make_batch(store, share.ids, total=share.total)

    def make_batch(self, store: BaseGraphStore | Data, anchors: NodeIds,
                   total: int = 0) -> NMLBatch:
        """Sample the subgraph of ``anchors`` and their candidate block (original ids in) from
        ``store`` (a ``Data`` is wrapped in a local store); features come from the store."""
        c = self.cfg
        if isinstance(store, Data):
            store = self.graph_store(store)
        anchors, calls_before = anchors.cpu(), store.calls
        if c.negatives == "within-batch":
            seeds, inv = torch.unique(anchors, return_inverse=True)
            anchor_local, cand_local = inv, inv
        else:
            cands = uniform_negatives(store.num_nodes, c.num_negatives, self.negatives_generator)
            seeds, inv = torch.unique(torch.cat([anchors, cands]), return_inverse=True)
            anchor_local, cand_local = inv[:anchors.numel()], inv[anchors.numel():]
        sub = store.sample(seeds, c.num_neighbors, self.sampling_generator)
        dev = self.work.device
        x = store.features(sub.n_id)
        return NMLBatch(x=x.to(dev), edge_index=sub.edge_index.to(dev),
                        num_seeds=sub.batch_size, anchor_ids=anchor_local.to(dev),
                        candidate_ids=cand_local.to(dev), n_id=sub.n_id,
                        total=total or anchors.numel(), store_calls=store.calls - calls_before)

    # ------------------------------------------------------------------ loss and steps
    def views(self, x: Tensor, edge_index: Tensor, targets: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
        """Encoder outputs of two independently augmented views, :math:`(n, d)` each, or only
        the rows ``targets`` (the last layer computes just those rows)."""
        a, g = self.config.augment, self.augment_generator
        x1, e1 = augment_view(x, edge_index, a.edge_drop_1, a.feature_mask_1, generator=g)
        x2, e2 = augment_view(x, edge_index, a.edge_drop_2, a.feature_mask_2, generator=g)
        return self.module("model")(x1, e1, x2, e2, targets)

    def _alpha(self) -> float | None:
        if self.cfg.alpha_scale == "graph":
            return self.cfg.c * (self.info.num_nodes - 1)
        return None

    def loss(self, u: Tensor, v: Tensor, anchor_ids: NodeIds | None = None,
             candidate_ids: NodeIds | None = None, *, metric_input_detached: bool = False,
             normalizer: int | None = None, logits: BlockLogits | None = None
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The NML loss of embeddings ``u, v`` with the current NMN (both modes);
        ``logits``: their :func:`~distgcl.losses.nml_block_logits`, if computed already."""
        c = self.cfg
        mu, mv = (u.detach(), v.detach()) if metric_input_detached else (u, v)
        metric = self.module("nmn")(mu, mv)
        chunk = c.chunk_size if (c.mode == "full" and c.chunk_size > 0) else None
        return nml_loss(u, v, metric, c.tau, c.c, anchor_ids=anchor_ids,
                        candidate_ids=candidate_ids, include_positive=c.include_positive,
                        alpha=self._alpha(), chunk_size=chunk, normalizer=normalizer,
                        logits=logits)

    def training_step(self, batch: Any) -> dict[str, float]:
        """One outer step: T_M NMN updates, then one encoder update (see the module docs)."""
        self.train()
        if isinstance(batch, NMLBatch):
            batch = batch.to(self.work.device)
            # the loss reads the seeds' rows only (anchors and candidates): the last layer and
            # the projection head compute just those, not the sampled neighbourhood's
            seeds = torch.arange(batch.num_seeds, device=batch.x.device)
            u, v = self.views(batch.x, batch.edge_index, seeds)
            anchor_ids, cand_ids = batch.anchor_ids, batch.candidate_ids
            total, count = batch.total, batch.anchor_ids.numel()
            extra: dict[str, float] = {"store_calls": float(batch.store_calls)}  # summed ranks
        else:
            data, share = batch
            u, v = self.views(data.x, data.edge_index)
            anchor_ids = None if share.complete else share.ids.to(u.device)
            cand_ids, total, count = None, share.total, share.ids.numel()
            extra = {}
        stats = self.bilevel_step(u, v, anchor_ids, cand_ids, normalizer=total)
        self.counters["steps"] += 1
        return {**stats, **extra, "anchors": float(count)}

    def bilevel_step(self, u: Tensor, v: Tensor, anchor_ids: NodeIds | None = None,
                     candidate_ids: NodeIds | None = None, *,
                     normalizer: int | None = None) -> dict[str, float]:
        """T_M NMN steps on detached ``u, v``, then one encoder step
        (:func:`distgcl.methods.bilevel.bilevel_step`). Mini-batch: the InfoNCE logits of the
        fixed embeddings are computed once for the T_M inner steps (only the NMN changes there)."""
        block = candidate_ids is not None and anchor_ids is not None
        fixed: list[tuple[Tensor, Tensor, BlockLogits]] = []  # (u, v, their logits)

        def logits_of(uu: Tensor, vv: Tensor) -> BlockLogits | None:
            if not block or uu.requires_grad or vv.requires_grad:
                return None  # the encoder step: the logits carry the encoder's gradient
            if not fixed or fixed[0][0] is not uu or fixed[0][1] is not vv:
                fixed[:] = [(uu, vv, nml_block_logits(uu, vv, anchor_ids, candidate_ids,
                                                      self.cfg.tau))]
            return fixed[0][2]

        def loss(uu: Tensor, vv: Tensor, detached: bool) -> tuple[Tensor, dict[str, Tensor]]:
            return self.loss(uu, vv, anchor_ids, candidate_ids, metric_input_detached=detached,
                             normalizer=normalizer, logits=logits_of(uu, vv))

        return bilevel_step(u, v, loss, encoder_opt=self.optimizers["encoder"],
                            metric_opt=self.optimizers.get("nmn"),
                            inner_steps=self.cfg.inner_steps, encoder=self.model, metric=self.nmn,
                            metric_grad_to_encoder=self.cfg.metric_grad_to_encoder,
                            check_finite=self.check_finite, counters=self.counters)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def embed(self, data: Data) -> Tensor:
        """Encoder output on the full, unaugmented graph (eval mode), O(N d + E d) memory."""
        self.eval()
        return self.encoder(data.x, data.edge_index)

    @torch.no_grad()
    def false_negative_diagnostic(self, data: Data) -> dict[str, Any]:
        r"""Does the learned metric down-weight same-class ("false") negatives?

        On the trained model (eval mode, unaugmented graph; :math:`u = v = f(G)`) sample
        ``diagnostic_anchors`` anchors and ``diagnostic_candidates`` candidates (uniform, without
        replacement, a node never its own candidate) and compute :math:`m_{ij}` over that block.
        Reports the mean weight :math:`w_{ij} = n_i m_{ij}` (1 = InfoNCE) over same-class and
        other-class pairs and the ROC-AUC of :math:`-m_{ij}` for separating same-class
        (positive label) from other-class candidates: AUC > 0.5 means the metric gives lower
        weight to likely false negatives. ``rocauc_neg_cosine`` is the same AUC for the plain
        embedding cosine :math:`-\cos(z_i, z_j)`, the baseline the NMN has to beat.
        O(anchors x candidates) memory. ``metric_scale`` is the learned inverse temperature
        :math:`\beta` of ``metric: signed`` (negative: anchor-like candidates weigh less).

        What to expect: the faithful NMN (``metric: nmn``) cannot score above 0.5 here by
        construction, only approach it by flattening :math:`m`: its logit
        :math:`\cos(g(u_i), g(v_j))` uses one map :math:`g` on both sides, so anchor-like
        candidates get the *largest* weights (see
        :class:`~distgcl.nn.nmn.NegativeMetricNetwork`; every row of bench/results/nml.json:
        same-class weight > 1, AUC < 0.5). ``metric: signed`` can invert the ranking
        (:class:`~distgcl.nn.nmn.SignedNegativeMetricNetwork`); how far its weights move from 1
        is bounded by the KL term (``weight_std``).
        """
        from sklearn.metrics import roc_auc_score

        y = getattr(data, "y", None)
        if y is None or (y.dim() > 1 and y.size(-1) > 1):
            return {}
        y = y.view(-1)
        c, n = self.cfg, data.num_nodes
        gen = torch.Generator().manual_seed(self.config.train.seed + 7)
        anchors = torch.randperm(n, generator=gen)[:min(c.diagnostic_anchors, n)]
        cands = torch.randperm(n, generator=gen)[:min(c.diagnostic_candidates, n)]
        z = self.embed(data)
        anchors, cands, y = anchors.to(z.device), cands.to(z.device), y.to(z.device)
        mask = anchors.unsqueeze(1) != cands.unsqueeze(0)  # [B, K]
        factors = self.nmn(z[anchors], z[cands])
        m = metric_log_probs(factors.anchor_u, factors.candidate_v, mask).exp()  # [B, K]
        w = m * mask.sum(1, keepdim=True)
        cos = torch.nn.functional.normalize(z[anchors], dim=1) @ \
            torch.nn.functional.normalize(z[cands], dim=1).t()
        same = (y[anchors].unsqueeze(1) == y[cands].unsqueeze(0))[mask]
        same, m_valid, w_valid, cos_valid = (t.cpu() for t in (same, m[mask], w[mask], cos[mask]))
        out: dict[str, Any] = {
            "anchors": int(anchors.numel()), "candidates": int(cands.numel()),
            "metric": c.metric, "fraction_same_class": float(same.float().mean()),
            "mean_m_same_class": float(m_valid[same].mean()) if same.any() else None,
            "mean_m_other_class": float(m_valid[~same].mean()) if (~same).any() else None,
            "mean_weight_same_class": float(w_valid[same].mean()) if same.any() else None,
            "mean_weight_other_class": float(w_valid[~same].mean()) if (~same).any() else None,
            "weight_std": float(w_valid.std()),
        }
        scale = getattr(self.nmn, "scale", None)
        if scale is not None:
            out["metric_scale"] = float(scale.detach())
        if same.any() and (~same).any():
            labels = same.numpy().astype(int)
            out["rocauc_neg_m"] = float(roc_auc_score(labels, (-w_valid).numpy()))
            out["rocauc_neg_cosine"] = float(roc_auc_score(labels, (-cos_valid).numpy()))
        return out
