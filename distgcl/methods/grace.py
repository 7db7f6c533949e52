"""GRACE (Zhu et al., 2020, "Deep Graph Contrastive Representation Learning").

Two views by edge dropping + feature masking, a shared GCN encoder, a projection head and the
symmetric InfoNCE of :func:`distgcl.losses.grace_loss` with inter- and intra-view negatives.
``negatives: full`` is the paper's O(N^2) objective (optionally chunked to O(BN) memory);
``negatives: sampled`` draws K negatives per anchor block for graphs where N x N does not fit.

Data parallelism: both views come from the *shared* augmentation stream (the same on every rank),
and each rank takes its share of the anchors: its rows of the full objective (``full``; the ranks'
losses add up to the single-process loss) or its slice of the epoch's anchor permutation
(``sampled``, with negative blocks from the rank's own stream). With ``batching: parts`` every
step is the subgraph one random node part induces (:mod:`distgcl.partitions`), each rank
taking its slice of the epoch's parts.

From a graph store (``work.services.store``, e.g. graph-shard actors): ``batching: parts`` needs
no ``Data``. The parts are cut from :meth:`Work.epoch_order`'s permutation of the node ids alone
(no METIS, no look at the graph), so the same seed gives the same parts on any backend; each
part's induced edges (``store.induced_edges``, in the input edge order) and feature rows
(``store.features``) come from the store, the same tensors as from the ``Data``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
from torch import Tensor
from torch_geometric.data import Data

from distgcl.augment import augment_view
from distgcl.config import Config, check_at_least, check_positive
from distgcl.losses import grace_loss, sampled_grace_loss
from distgcl.methods import register_method
from distgcl.methods.base import GraphInfo, Method
from distgcl.nn import GCNEncoder, Projector, TwoViewEncoder
from distgcl.partitions import InducedSubgraphs, random_parts
from distgcl.store import BaseGraphStore
from distgcl.work import STREAM_AUGMENT, STREAM_NEGATIVES, Share, Work


@dataclass(kw_only=True)
class GraceConfig:
    tau: float = 0.5
    """Temperature."""
    negatives: Literal["full", "sampled"] = "full"
    """``full``: all 2N-2 negatives per anchor; ``sampled``: 2K sampled ones."""
    num_negatives: int = 1024
    """K for ``negatives: sampled``."""
    chunk_size: int = 0
    """Anchors per similarity chunk for ``full`` (0: one N x N block)."""
    block_size: int = 1024
    """Anchors sharing one sampled candidate block for ``sampled``."""
    intra_view: bool = True
    """Use intra-view negatives as well as inter-view ones."""
    batching: Literal["full", "parts"] = "full"
    """``full``: every step sees the whole graph; ``parts``: each epoch splits the nodes into
    ``num_parts`` random parts and each step trains on the subgraph one part induces (the
    ogbn-proteins recipe: at mean degree ~600 fan-out sampling would reach most of the graph)."""
    num_parts: int = 40
    """Random node parts per epoch for ``batching: parts``."""

    def validate(self, prefix: str) -> None:
        check_positive(f"{prefix}.tau", self.tau)
        check_at_least(f"{prefix}.num_negatives", self.num_negatives, 1)
        check_at_least(f"{prefix}.chunk_size", self.chunk_size, 0)
        check_at_least(f"{prefix}.block_size", self.block_size, 1)
        check_at_least(f"{prefix}.num_parts", self.num_parts, 1)


def build_encoder(config: Config, info: GraphInfo) -> GCNEncoder:
    m = config.model
    return GCNEncoder(info.num_features, m.out_dim, m.hidden_dim, m.layers, m.activation,
                      m.activate_last)


@register_method("grace", GraceConfig)
class Grace(Method):
    """GRACE on the :class:`~distgcl.methods.base.Method` interface."""

    ddp_modules = ("model",)

    def __init__(self, config: Config, info: GraphInfo, work: Work | None = None) -> None:
        super().__init__(config, info, work)
        self.cfg: GraceConfig = config.section("grace")
        proj = config.model.proj_dim
        self.model = TwoViewEncoder(build_encoder(config, info),
                                    Projector(config.model.out_dim, proj) if proj > 0 else None)
        # whole graph: every rank draws the same views (its rows add up to the single-process
        # objective); random parts: each rank augments its own part
        self.augment_generator = self.work.generator(
            STREAM_AUGMENT, shared=self.cfg.batching == "full")
        self.shared_model_noise = self.cfg.batching == "full"  # RReLU's slopes likewise
        self.negatives_generator = self.work.generator(STREAM_NEGATIVES, device="cpu")
        self._induced: InducedSubgraphs | None = None

    @property
    def encoder(self) -> GCNEncoder:
        return self.model.encoder

    def can_train_from_store(self) -> bool:
        """``batching: parts`` only: a part is a node-id set whose induced edges and rows the
        store serves. The whole-graph objective (``batching: full``, with ``negatives: full``
        or ``sampled``) augments and encodes every edge of the graph in every step, so it needs
        the whole edge list and feature matrix in the worker anyway."""
        return self.cfg.batching == "parts"

    @property
    def prefetch_batches(self) -> bool:  # type: ignore[override]
        """Random parts are cut on a background thread (:mod:`distgcl.prefetch`): they come
        from :meth:`Work.epoch_order`'s own seeded generator, no global stream; the whole graph
        (one batch an epoch) has nothing to overlap."""
        return self.cfg.batching == "parts"

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        t = self.config.train
        self.optimizers = {"model": torch.optim.Adam(self.model.parameters(), lr=t.lr,
                                                     weight_decay=t.weight_decay)}
        return self.optimizers

    def views(self, data: Data) -> tuple[Tensor, Tensor]:
        """Projected embeddings of two independently augmented views (one module call)."""
        a, g = self.config.augment, self.augment_generator
        x1, e1 = augment_view(data.x, data.edge_index, a.edge_drop_1, a.feature_mask_1,
                              generator=g)
        x2, e2 = augment_view(data.x, data.edge_index, a.edge_drop_2, a.feature_mask_2,
                              generator=g)
        return self.module("model")(x1, e1, x2, e2)

    def anchors(self, data: Data, epoch: int) -> Share:
        """This rank's anchors: its rows of the full objective, or its slice of the epoch's
        permutation for sampled negatives (one step per epoch either way)."""
        n = data.num_nodes
        if self.cfg.negatives == "sampled":
            return next(self.work.epoch_batches(n, epoch, batch_size=-(-n // self.work.world_size)))
        return self.work.share(torch.arange(n))

    def loss(self, h1: Tensor, h2: Tensor, share: Share, all_rows: bool = False) -> Tensor:
        """GRACE over this rank's anchors (``all_rows``: every row of ``h1, h2`` is an anchor,
        e.g. the nodes of a random part), divided by the step's global anchor count."""
        c = self.cfg
        ids = share.ids.to(h1.device)
        if c.negatives == "sampled":
            return sampled_grace_loss(h1, h2, c.tau, c.num_negatives, self.negatives_generator,
                                      anchor_ids=ids, block_size=c.block_size,
                                      intra_view=c.intra_view, normalizer=share.total)
        return grace_loss(h1, h2, c.tau, chunk_size=c.chunk_size or None,
                          intra_view=c.intra_view,
                          anchor_ids=None if share.complete or all_rows else ids,
                          normalizer=share.total)

    def steps_per_epoch(self, data: Data | None) -> int:
        if self.cfg.batching == "parts":
            return self.work.steps_per_epoch(self.cfg.num_parts, 1)
        return 1

    def batches(self, data: Data | None, epoch: int, start_step: int = 0) -> Iterator[Any]:
        if self.cfg.batching == "full":
            if data is None:
                raise ValueError("grace batching: full needs the graph (data); only "
                                 "batching: parts trains from a graph store")
            if start_step == 0:
                yield data, self.anchors(data, epoch)
            return
        store = self.work.services.store
        if store is None and data is None:
            raise ValueError("grace batching: parts needs the graph (data) or a graph store")
        n = store.num_nodes if store is not None else data.num_nodes
        # one permutation of the node ids, cut into parts (no graph needed); each rank takes
        # its slice of the parts
        parts = random_parts(self.work.epoch_order(n, epoch), self.cfg.num_parts)
        world = self.work.world_size
        for pick in self.work.epoch_batches(len(parts), epoch, 1, start_step=start_step):
            nodes = parts[int(pick.ids[0])]
            sub = (self.part_from_store(store, nodes) if store is not None
                   else self.part_from_data(data, nodes))
            # part sizes differ by at most one node: the global count is world x this one
            ids = torch.arange(nodes.numel())
            yield sub, Share(ids, total=nodes.numel() * world, complete=world == 1,
                             step=pick.step)

    def part_from_data(self, data: Data, nodes: Tensor) -> Data:
        """The subgraph ``nodes`` :math:`(n,)` induce in an in-process graph (CSR built once)."""
        if self._induced is None or self._induced.num_nodes != data.num_nodes:
            self._induced = InducedSubgraphs(data.edge_index, data.num_nodes)
        dev = data.x.device
        return Data(x=data.x[nodes.to(dev)], edge_index=self._induced(nodes).to(dev),
                    num_nodes=nodes.numel())

    def part_from_store(self, store: BaseGraphStore, nodes: Tensor) -> Data:
        """The subgraph ``nodes`` :math:`(n,)` induce, from the store: local edges
        :math:`(2, e)` in the input edge order and feature rows :math:`(n, F)`."""
        dev = self.work.device
        edge_index, _ = store.induced_edges(nodes)
        return Data(x=store.features(nodes).to(dev), edge_index=edge_index.to(dev),
                    num_nodes=nodes.numel())

    def training_step(self, batch: Any) -> dict[str, float]:
        data, share = batch
        self.train()
        opt = self.optimizers["model"]
        opt.zero_grad()
        h1, h2 = self.views(data)
        loss = self.loss(h1, h2, share, all_rows=self.cfg.batching == "parts")
        self.check_finite(loss)
        loss.backward()
        opt.step()
        self.counters["steps"] += 1
        return {"loss": loss.item(), "anchors": float(share.ids.numel())}

    @torch.no_grad()
    def embed(self, data: Data) -> Tensor:
        self.eval()
        return self.encoder(data.x, data.edge_index)
