r"""E2Neg (Huang et al., AAAI 2025, "Does GCL Need a Large Number of Negative Samples?
Enhancing Graph Contrastive Learning with Effective and Efficient Negative Sampling").

Pipeline (``papers.md`` §1):

1. **Spectral step** (once, in :meth:`E2Neg.prepare`, cached on disk): the ``clusters`` = K
   smallest eigenpairs of
   :math:`\mathbf{L} = \mathbf{I} - \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}`
   (:mod:`distgcl.spectral.eigensolvers`), k-means on the rows, one centre per cluster by spectral
   centrality :math:`\arg\max_{i \in C_k}\lVert \mathbf{U}_K[i,:]\rVert`, then a star graph around
   every centre (:func:`~distgcl.spectral.reconstruction.reconstruct_stars`): up to
   ``num_neighbors`` leaves from its :math:`h`-hop ball, edges leaf → centre.
2. **Training**: each step draws two independently augmented views of the star graph and
   minimizes GRACE's symmetric InfoNCE over the :math:`K' \le K` centres only (2(K'-1) negatives
   per anchor, :func:`distgcl.losses.grace_block_loss`), :math:`\tau = 0.5`:

   .. math::
       \ell(h^1_i, h^2_i) = -\log\frac{e^{s(h^1_i,h^2_i)/\tau}}
       {\sum_{j=1}^{K'} e^{s(h^1_i,h^2_j)/\tau} + \sum_{j\ne i} e^{s(h^1_i,h^1_j)/\tau}},\qquad
       \mathcal{L} = \frac{1}{2K'}\sum_{i=1}^{K'}\left[\ell(h^1_i,h^2_i) + \ell(h^2_i,h^1_i)\right].

3. **Evaluation**: the trained encoder on the **full original graph** (no projector).

**E2Neg + NML** (``e2neg.nml: true``, no paper has it): NML-GCL's negative metric network
(:class:`~distgcl.nn.nmn.NegativeMetricNetwork`) weights the centre negatives,
:func:`distgcl.losses.nml_loss` over the centres (inter-view negatives only, as NML-GCL), with
NML-GCL's alternating schedule: ``nml_inner_steps`` NMN updates on the detached centre embeddings,
then one encoder update with the NMN frozen.

**Deliberate differences from the official code** (``hedongxiao-tju/E2Neg`` @ ``059c5baa``):

* *Spectrum end.* The official code calls ``scipy.sparse.linalg.svds(L, k=K)`` whose default
  ``which='LM'`` returns the K **largest** singular values of :math:`\mathbf{L}`, i.e. its largest
  eigenvalues (high frequencies, :math:`\lambda \approx 1.5\text{–}2`). We use the K **smallest**
  eigenvectors (low frequencies carry the cluster structure), as the paper's spectral clustering
  describes.
* *Two views.* The official ``augment`` permutes the centre feature rows **in place** and returns
  the same tensor, so both "views" are one tensor (positive similarity always 1, and the
  permutation accumulates over epochs). Here each view is a fresh copy: view :math:`v` gets its
  own random permutation of the centre feature rows (``permute_centres``, the paper's
  augmentation) **plus** GRACE-style edge dropping and feature-column masking with
  ``augment.edge_drop_v`` / ``augment.feature_mask_v``. The permutation alone barely changes a
  view (a centre's own feature enters its GCN aggregate with weight :math:`1/(d+1) \approx 1\%`
  for 100 leaves), so edge dropping (a different leaf subset per view) and masking are what make
  the two views genuinely different.
* *Disconnected graphs* (``component: all``, default). The official code runs one spectral
  clustering on the whole graph; with :math:`c` components its first :math:`c` eigenvectors are
  component indicators, so the norm rule picks isolated nodes (indicator row norm 1) and
  k-means spends clusters on tiny components. Here every node is accounted for:

  1. the ``clusters`` = K clusters are shared among the components with an edge by the D'Hondt
     rule (:func:`~distgcl.spectral.centres.allocate_clusters`: each next cluster to the
     component with the most nodes per cluster), so a component gets clusters in proportion to
     its size and tiny components get none;
  2. the spectral step runs on the union of the components that got clusters (their indicators
     deflated), and k-means and the centre rule run *per component* with its share (a single
     component takes exactly the old path);
  3. **isolated nodes, and the nodes of components that got no cluster, become leaves of the
     centre nearest to them by feature cosine similarity** (extra leaves beyond
     ``num_neighbors``). They carry no structural signal (an isolated node's eigenvector is an
     arbitrary indicator :math:`e_i`), so features are all there is; the star graph is already a
     reconstructed topology of similar nodes, and attaching them keeps the K centres (making
     each one its own cluster would turn every isolated node into an anchor). They are trained
     on as leaves, through their centre's aggregate.

  ``method_info`` reports ``nodes_total``, ``nodes_in_stars`` (centres + leaves),
  ``nodes_clustered``, ``nodes_attached`` and ``isolated_nodes``. ``component: largest`` keeps
  the old behaviour (spectral step and centres on the largest component, other nodes in no
  star) and warns how many nodes that leaves out. The stars and the evaluation use the whole
  graph either way.
* *Sampling.* Seeded and exactly one star per node (see :mod:`distgcl.spectral.reconstruction`).

**Configs** (``configs/<dataset>_e2neg.yaml``): the appendix hyperparameters (lr, weight decay,
hidden width, epochs, K, 100 leaves, 50 minimum, tau 0.5, one GCN layer, PReLU), with two
engineering choices of ours: the projection head's hidden width is 512 (``model.proj_dim``;
E2Neg's head is out x out = 4096 x 4096, which made the head and its Adam state the bulk of a
step: 1.22 vs 0.18 s/step on PubMed, one thread), and the eigensolver is ``lobpcg-torch`` at
``tol`` 1e-4 (fastest on PubMed here: 54 s vs 100 s scipy+AMG vs 78 s eigsh, loaded machine).

**From a graph store** (``work.services.store``, ``data=None``: the worker holds no graph).
The spectral step runs on the job's shard actors through the eigensolver service
(:meth:`~distgcl.distributed.services.ShardedEigensolver.attached_eigenpairs`: only the
:math:`N \times K` eigenvectors come back). Disconnected graphs as above: the shards serve the
partition's component labels (``attached_components``, numbered like ``connected_components``
on the whole graph: by smallest node id), so the allocation is the same, and the eigenpairs are
those of the subgraph the clustered components induce, solved on the shards
(:class:`~distgcl.distributed.linalg.InducedBlockSpace`). Without such a service the store's
edge list is gathered once and the spectral step runs in-process as on a ``Data``. k-means
and centres as above, then :func:`stars_from_store` reconstructs the stars from the centres'
neighbour lists asked of the store hop by hop (no edge list in the worker), and the star batch's feature rows come from the
store. Same seed, same stars and numbers as on the ``Data`` (for an undirected edge list: the
store follows in-edges, the ``Data`` path the symmetrized graph).

**Cost**: only the centre rows of the last GCN layer enter the loss, so the last layer is computed
for the centres only, as :math:`(\hat{\mathbf{A}}\mathbf{H})_{\mathcal{C}}\boldsymbol{\Theta} + b`
(aggregate, then transform: exact for GCNConv, ``GCNEncoder.forward(..., targets)``); for E2Neg's one-layer
encoder a step costs :math:`O(K \cdot F \cdot d + |E_{\text{star}}| F)` instead of
:math:`O(K \cdot 101 \cdot F \cdot d)`.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import Data

from distgcl.augment import augment_view
from distgcl.checkpoint import atomic_torch_save
from distgcl.config import Config, ConfigError, check_at_least, check_positive
from distgcl.losses import grace_block_loss, nml_loss
from distgcl.methods import register_method
from distgcl.methods.base import GraphInfo, Method
from distgcl.methods.bilevel import bilevel_step
from distgcl.methods.grace import build_encoder
from distgcl.nn import GCNEncoder, Projector, TwoViewEncoder, build_metric_network
from distgcl.spectral import (StarGraph, adjacency, allocate_clusters, attach_leaves, cluster_purity,
                              connected_components, laplacian_from_adjacency,
                              nearest_by_features, reconstruct_stars, select_centres,
                              smallest_eigenpairs, spectral_clusters, trivial_eigenvectors)
from distgcl.spectral.reconstruction import grow_stars
from distgcl.store import BaseGraphStore
from distgcl.typing import EdgeIndex
from distgcl.work import STREAM_AUGMENT, Share, Work


@dataclass(kw_only=True)
class E2NegConfig:
    clusters: int = 50
    """K: eigenvectors = k-means clusters = (at most) centres."""
    num_neighbors: int = 100
    """Leaves sampled per centre, at most."""
    min_neighbors: int = 50
    """Grow a star's radius until its ball holds this many candidates."""
    max_hops: int = 10
    """Largest star radius."""
    start_hops: int = 2
    """First star radius (E2Neg: 2)."""
    solver: Literal["lobpcg-scipy", "lobpcg-torch", "eigsh", "chebyshev", "lobpcg-block",
                    "dense"] = "lobpcg-scipy"
    """Eigensolver backend (:mod:`distgcl.spectral.eigensolvers`)."""
    tol: float = 1e-5
    """Absolute eigen-residual tolerance."""
    maxiter: int = 500
    """LOBPCG iterations at most."""
    pad: int | None = None
    """Extra block columns (default: LOBPCG max(5, 20 % of K), ``chebyshev`` max(8, K / 4))."""
    max_matvecs: int | None = None
    """Block solvers (``chebyshev``, ``lobpcg-block``): stop after this many single-vector
    products. k-means needs the invariant subspace, not tight eigenvectors: on the
    proteins-size graph 640 products reach eigsh's cluster NMI in 0.125x its time
    (bench/results/shards.json)."""
    subspace_tol: float | None = None
    """``chebyshev`` only: stop once the k-dimensional eigenspace has settled (projector change
    between steps or Davis-Kahan residual bound at most this, in (0, 1)), ``max_matvecs`` then
    the ceiling (default: off)."""
    spectral_dtype: Literal["float64", "float32"] = "float64"
    """Working precision of the iterative solve (residuals are reported in float64)."""
    component: Literal["largest", "all"] = "all"
    """``all``: every component shares the clusters, isolated nodes and components without a
    cluster are attached to the feature-nearest centre; ``largest``: the old behaviour (only the
    largest component is clustered and enters stars)."""
    centre_rule: Literal["norm", "centroid"] = "norm"
    """``norm``: spectral centrality (paper); ``centroid``: closest to the k-means centroid."""
    kmeans: Literal["minibatch", "full"] = "minibatch"
    """MiniBatchKMeans (batch 2000, as E2Neg) or full KMeans."""
    seed: int | None = None
    """Seeds the eigensolver start, k-means and star sampling (default: ``train.seed``)."""
    tau: float = 0.5
    """InfoNCE temperature (E2Neg hard-codes 0.5)."""
    permute_centres: bool = True
    """Permute the centre feature rows independently in each view (the paper's augmentation)."""
    intra_view: bool = True
    """Intra-view centre negatives as well (GRACE's semi_loss, as E2Neg)."""
    cache: bool = True
    """Cache eigenpairs and stars under the trainer's cache dir."""
    nml: bool = False
    """E2Neg + NML: weight the centre negatives with NML-GCL's negative metric network."""
    nml_c: float = 0.1
    """NML regularization: alpha = c * (K' - 1)."""
    nml_inner_steps: int = 3
    """NMN updates per encoder update (NML-GCL's T_M)."""
    nml_lr: float = 5e-4
    """Adam learning rate of the NMN (NML-GCL's lr1)."""
    nml_hidden: int = 512
    """Hidden width of the NMN."""
    nml_metric: Literal["nmn", "signed"] = "nmn"
    """The metric network: NML-GCL's (``nmn``) or the one with a learned signed inverse
    temperature that can down-weight anchor-like centres (``signed``,
    :class:`~distgcl.nn.nmn.SignedNegativeMetricNetwork`)."""

    def validate(self, prefix: str) -> None:
        check_at_least(f"{prefix}.clusters", self.clusters, 2)
        check_at_least(f"{prefix}.num_neighbors", self.num_neighbors, 1)
        check_at_least(f"{prefix}.min_neighbors", self.min_neighbors, 0)
        check_at_least(f"{prefix}.start_hops", self.start_hops, 1)
        check_at_least(f"{prefix}.max_hops", self.max_hops, self.start_hops)
        check_positive(f"{prefix}.tol", self.tol)
        check_at_least(f"{prefix}.maxiter", self.maxiter, 1)
        if self.pad is not None:
            check_at_least(f"{prefix}.pad", self.pad, 0)
        if self.max_matvecs is not None:
            check_at_least(f"{prefix}.max_matvecs", self.max_matvecs, 1)
        if self.subspace_tol is not None:
            check_positive(f"{prefix}.subspace_tol", self.subspace_tol)
            if self.subspace_tol >= 1 or self.solver != "chebyshev":
                raise ConfigError(f"{prefix}.subspace_tol must be in (0, 1) with solver "
                                  f"chebyshev (got {self.subspace_tol}, {self.solver})")
        check_positive(f"{prefix}.tau", self.tau)
        check_at_least(f"{prefix}.nml_c", self.nml_c, 0.0)
        check_at_least(f"{prefix}.nml_inner_steps", self.nml_inner_steps, 0)
        check_positive(f"{prefix}.nml_lr", self.nml_lr)
        check_at_least(f"{prefix}.nml_hidden", self.nml_hidden, 1)


@dataclass
class StarBatch:
    """The reconstructed graph as one training batch (local ids, centres first)."""

    x: Tensor
    """:math:`(K' + M, F)` features of centres and leaves."""
    edge_index: EdgeIndex
    """:math:`(2, M)` leaf → centre."""
    centres: Tensor
    """:math:`(K',)` local ids of the centres (``arange(K')``)."""
    node_ids: Tensor
    """:math:`(K' + M,)` ids in the original graph."""


# ----------------------------------------------------------------------------- pure helpers

def permute_rows(x: Tensor, rows: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
    r"""E2Neg's "centre permutation": a **copy** of ``x`` whose rows ``rows`` are shuffled among
    themselves, :math:`x'_{r_i} = x_{r_{\pi(i)}}`; ``x`` is not modified.

    Shapes:
        - **input:** ``x`` :math:`(N, F)`, ``rows`` :math:`(K,)`
        - **output:** :math:`(N, F)` and the permutation :math:`\pi` :math:`(K,)`
    """
    # drawn on the generator's device (a CUDA generator cannot fill a CPU tensor), then moved
    dev = generator.device if generator is not None else rows.device
    perm = torch.randperm(rows.numel(), generator=generator, device=dev).to(rows.device)
    out = x.clone()
    out[rows] = x[rows[perm]]
    return out, perm


def graph_key(edge_index: EdgeIndex, num_nodes: int, params: dict[str, Any]) -> str:
    """Hash of the graph (edge list bytes and N) and the parameters, for the disk cache."""
    digest = hashlib.blake2b(digest_size=16)
    ei = edge_index.detach().cpu().contiguous()
    digest.update(f"{num_nodes}:{tuple(ei.shape)}:{ei.dtype}".encode())
    digest.update(ei.numpy().tobytes())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _load_or_build(path: Path | None, build: Callable[[], Any]) -> tuple[Any, bool]:
    """``(torch.load(path), True)`` if the cache file exists, else ``(build(), False)``, saved
    to ``path`` unless it is None.

    Under a file lock beside ``path`` (:func:`distgcl.data.cache.cache_lock`), so concurrent
    ranks and nodes build it once; written through a temporary file and a rename, so a reader
    never sees a partial file; an unreadable one (an older, interrupted writer) is rebuilt."""
    if path is None:
        return build(), False
    from distgcl.data.cache import cache_lock

    with cache_lock(path):
        if path.is_file():
            try:
                return torch.load(path, weights_only=False), True
            except Exception as exc:  # a truncated or foreign file: rebuild it
                warnings.warn(f"e2neg cache {path.name} is unreadable ({type(exc).__name__}); "
                              f"rebuilding it", RuntimeWarning, stacklevel=3)
        obj = build()
        atomic_torch_save(obj, path)  # unique temp name + os.replace
        return obj, False


def store_key(store: BaseGraphStore, params: dict[str, Any]) -> str | None:
    """Cache key of a store's graph and the parameters: the hash of its partition manifest
    (which holds the sha256 of every shard file), or None (no cache) for a store without one."""
    path = getattr(store, "manifest_path", None)
    if not path:
        return None
    digest = hashlib.blake2b(digest_size=16)
    digest.update(Path(path).read_bytes())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def stars_from_store(store: BaseGraphStore, centres: Tensor, *, max_neighbors: int = 100,
                     min_neighbors: int = 50, max_hops: int = 10, start_hops: int = 2,
                     seed: int = 0, chunk: int = 8192) -> StarGraph:
    r""":func:`~distgcl.spectral.reconstruction.reconstruct_stars` around ``centres``
    :math:`(K,)` from a graph store, without the whole graph: equal to it on the store's
    (undirected) graph with ``generator=torch.Generator().manual_seed(seed)``.

    Each hop of :func:`~distgcl.spectral.reconstruction.grow_stars` asks the store for the
    neighbour lists of the frontier nodes (``store.sample(frontier, [-1])``, ``chunk`` seeds per
    call) and multiplies the :math:`K \times |U|` frontier by them: the same
    :math:`\mathbf{F}\mathbf{A}` as the whole adjacency. Memory: the visited :math:`K \times N`
    boolean CSR plus one chunk's neighbour lists (``chunk`` times the degree), whatever the
    graph's edge count; calls: ``ceil(|U| / chunk)`` per hop.
    """
    n = store.num_nodes
    # fan-out -1 draws nothing; a generator of its own keeps it off torch's global stream
    quiet = torch.Generator().manual_seed(seed)

    def expand(step: sp.csr_matrix) -> sp.csr_matrix:
        frontier = np.unique(step.indices)
        reached = sp.csr_matrix(step.shape, dtype=bool)
        for start in range(0, frontier.size, chunk):
            part = frontier[start:start + chunk]
            sub = store.sample(torch.from_numpy(part.astype(np.int64)), [-1], quiet)
            neighbour = sub.n_id[sub.edge_index[0]].cpu().numpy()
            seed_pos = sub.edge_index[1].cpu().numpy()  # seeds come first in n_id
            lists = sp.csr_matrix((np.ones(neighbour.size, dtype=bool), (seed_pos, neighbour)),
                                  shape=(part.size, n))
            reached = reached + step[:, part] @ lists
        return reached

    return grow_stars(expand, n, centres, max_neighbors=max_neighbors,
                      min_neighbors=min_neighbors, max_hops=max_hops, start_hops=start_hops,
                      generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- method

@register_method("e2neg", E2NegConfig)
class E2Neg(Method):
    """E2Neg (and E2Neg + NML) on the :class:`~distgcl.methods.base.Method` interface.

    Data parallelism: the star graph is the same on every rank, both views come from the shared
    augmentation stream, and each rank takes its share of the centres as anchors (against all
    centres as candidates), so the ranks' losses add up to the single-process loss.
    """

    ddp_modules = ("model", "nmn")

    def __init__(self, config: Config, info: GraphInfo, work: Work | None = None) -> None:
        super().__init__(config, info, work)
        self.cfg: E2NegConfig = config.section("e2neg")
        self.seed = config.train.seed if self.cfg.seed is None else self.cfg.seed
        m = config.model
        self.model = TwoViewEncoder(build_encoder(config, info),
                                    Projector(m.out_dim, m.proj_dim) if m.proj_dim > 0 else None)
        self.nmn = (build_metric_network(self.cfg.nml_metric, m.out_dim,
                                         min(self.cfg.nml_hidden, m.out_dim))
                    if self.cfg.nml else None)
        self.augment_generator = self.work.generator(STREAM_AUGMENT, shared=True)
        if self.cfg.nml:
            self.counters.update(inner_steps=0, outer_steps=0)
        self.batch: StarBatch | None = None
        self.stats: dict[str, Any] = {}

    @property
    def encoder(self) -> GCNEncoder:
        return self.model.encoder

    @property
    def projector(self) -> torch.nn.Module:
        return self.model.projector

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        t = self.config.train
        self.optimizers = {"model": torch.optim.Adam(self.model.parameters(), lr=t.lr,
                                                     weight_decay=t.weight_decay)}
        if self.nmn is not None:
            self.optimizers["nmn"] = torch.optim.Adam(self.nmn.parameters(), lr=self.cfg.nml_lr)
        return self.optimizers

    # --------------------------------------------------------------------- preprocessing

    def _spectral_params(self) -> dict[str, Any]:
        c = self.cfg
        params = {"k": c.clusters, "solver": c.solver, "tol": c.tol, "maxiter": c.maxiter,
                  "pad": c.pad, "component": c.component, "seed": self.seed, "version": 2}
        if c.max_matvecs is not None or c.spectral_dtype != "float64":
            params.update(max_matvecs=c.max_matvecs, dtype=c.spectral_dtype)
        if c.subspace_tol is not None:  # only then: older cache keys stay valid
            params["subspace_tol"] = c.subspace_tol
        service = self.work.services.eigensolver
        if service is not None:  # e.g. sharded: other arithmetic, so its own cache entries
            params["service"] = getattr(service, "cache_tag", type(service).__name__)
        return params

    def _star_params(self) -> dict[str, Any]:
        c = self.cfg
        return {**self._spectral_params(), "rule": c.centre_rule, "kmeans": c.kmeans,
                "num_neighbors": c.num_neighbors, "min_neighbors": c.min_neighbors,
                "max_hops": c.max_hops, "start_hops": c.start_hops}

    def _allocate(self, count: int, comp: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Component sizes, clusters per component (class docstring) and the nodes of the
        components that got clusters (the spectral step's nodes)."""
        c = self.cfg
        sizes = np.bincount(comp, minlength=count)
        if c.component == "largest":
            alloc = np.zeros(count, dtype=np.int64)
            alloc[sizes.argmax()] = c.clusters
        else:
            alloc = allocate_clusters(np.where(sizes > 1, sizes, 0), c.clusters)
        nodes = np.flatnonzero(alloc[comp] > 0)
        if c.clusters >= nodes.size:
            raise ConfigError(f"e2neg.clusters must be < the number of nodes in the spectral step "
                              f"({nodes.size}) (got {c.clusters})")
        return sizes, alloc, nodes

    def _eigen_options(self) -> dict[str, Any]:
        c = self.cfg
        options = dict(solver=c.solver, tol=c.tol, maxiter=c.maxiter, seed=self.seed, pad=c.pad,
                       max_matvecs=c.max_matvecs, dtype=np.dtype(c.spectral_dtype),
                       progress=self.config.train.progress)
        if c.subspace_tol is not None:
            options["subspace_tol"] = c.subspace_tol
        return options

    def _spectral(self, adj: Any, num_nodes: int) -> dict[str, Any]:
        """Eigenpairs on the clustered components (class docstring), with the allocation."""
        count, comp = connected_components(adj)
        sizes, alloc, nodes = self._allocate(count, comp)
        sub = adj[nodes][:, nodes] if nodes.size < num_nodes else adj
        options = self._eigen_options()
        service = self.work.services.eigensolver
        if service is not None:  # the trainer's (e.g. over graph-shard actors)
            eig = service(sub, self.cfg.clusters, **options)
        else:
            _, labels = connected_components(sub)
            eig = smallest_eigenpairs(laplacian_from_adjacency(sub), self.cfg.clusters,
                                      null_space=trivial_eigenvectors(sub, labels), **options)
        return self._spectral_result(eig, nodes, comp, alloc, sizes)

    def _spectral_on_shards(self, service: Any, num_nodes: int) -> dict[str, Any]:
        """The spectral step on the job's shard actors (no adjacency here), as :meth:`_spectral`:
        the shards' component labels (numbered as ``connected_components`` numbers them on the
        whole graph, so the same allocation), then the eigenpairs of the subgraph the clustered
        components induce, computed on the shards."""
        comp = np.asarray(service.attached_components(), dtype=np.int64)
        if comp.shape != (num_nodes,):
            raise ValueError(f"the shards' component labels have shape {comp.shape}, expected "
                             f"({num_nodes},)")
        sizes, alloc, nodes = self._allocate(int(comp.max()) + 1, comp)
        eig = service.attached_eigenpairs(self.cfg.clusters, **self._eigen_options(),
                                          nodes=nodes if nodes.size < num_nodes else None)
        return self._spectral_result(eig, nodes, comp, alloc, sizes)

    @staticmethod
    def _spectral_result(eig: Any, nodes: np.ndarray, comp: np.ndarray, alloc: np.ndarray,
                         sizes: np.ndarray) -> dict[str, Any]:
        return {"nodes": torch.from_numpy(nodes), "eigenvalues": eig.eigenvalues,
                "eigenvectors": eig.eigenvectors.astype(np.float32), "residuals": eig.residuals,
                "summary": eig.summary(), "component": torch.from_numpy(comp[nodes]),
                "allocation": alloc, "num_components": int(sizes.size),
                "isolated": int(np.count_nonzero(sizes[comp] == 1))}

    def _cache_path(self, cache_dir: Path | None, kind: str, graph: Data | BaseGraphStore,
                    params: dict[str, Any]) -> Path | None:
        if not self.cfg.cache or cache_dir is None:
            return None
        key = (store_key(graph, params) if isinstance(graph, BaseGraphStore)
               else graph_key(graph.edge_index, graph.num_nodes, params))
        return None if key is None else Path(cache_dir) / f"{kind}-{key}.pt"

    def _spectral_builder(self, graph: Data | BaseGraphStore) -> tuple[Callable[[], Any], Any]:
        """What builds the spectral step for ``graph``, and the adjacency it holds (None from a
        store): the job's shards when the eigensolver service has them, else in-process on the
        adjacency (a store's edge list gathered once: :math:`O(E)` in this process)."""
        n = graph.num_nodes
        if isinstance(graph, BaseGraphStore):
            service = self.work.services.eigensolver
            if service is not None and getattr(service, "serves_attached", lambda _: False)(
                    np.dtype(self.cfg.spectral_dtype)):
                return (lambda: self._spectral_on_shards(service, n)), None
            store = graph

            def gathered() -> dict[str, Any]:
                edge_index, _ = store.induced_edges(torch.arange(n))
                return self._spectral(adjacency(edge_index, n, dtype=bool), n)
            return gathered, None
        adj = adjacency(graph.edge_index, n, dtype=bool)
        return (lambda: self._spectral(adj, n)), adj

    def _build_stars(self, graph: Data | BaseGraphStore, cache_dir: Path | None
                     ) -> dict[str, Any]:
        """Spectral step (cached on its own), k-means and centres per component, the star
        reconstruction, then the unreachable nodes attached by features (class docstring).
        ``graph``: a ``Data`` or, with no graph in this process, a graph store."""
        c = self.cfg
        n = graph.num_nodes
        store = graph if isinstance(graph, BaseGraphStore) else None
        build, adj = self._spectral_builder(graph)
        spec, spectral_hit = _load_or_build(
            self._cache_path(cache_dir, "spectral", graph, self._spectral_params()), build)
        self.stats["cache"] = "spectral" if spectral_hit else "miss"
        emb = spec["eigenvectors"]
        nodes = spec["nodes"]
        comp = spec["component"].numpy()
        alloc = spec["allocation"]
        labels = np.full(nodes.numel(), -1, dtype=np.int64)
        local: list[np.ndarray] = []
        offset = 0
        for component in np.flatnonzero(alloc):  # ascending id: a single component = old path
            rows = np.flatnonzero(comp == component)
            k = int(alloc[component])
            if k > 1:
                lab, centroids = spectral_clusters(emb[rows], k, seed=self.seed,
                                                   minibatch=c.kmeans == "minibatch")
            else:
                lab, centroids = np.zeros(rows.size, dtype=np.int64), None
            local.append(rows[select_centres(emb[rows], lab, rule=c.centre_rule,
                                             centroids=centroids)])
            labels[rows] = lab + offset
            offset += k
        centres = nodes[torch.from_numpy(np.concatenate(local))]
        star_options = dict(max_neighbors=c.num_neighbors, min_neighbors=c.min_neighbors,
                            max_hops=c.max_hops, start_hops=c.start_hops)
        if store is not None:  # the centres' neighbourhoods, asked of the store
            stars = stars_from_store(store, centres, seed=self.seed, **star_options)
        else:
            stars = reconstruct_stars(graph.edge_index, n, centres, adj=adj,
                                      generator=torch.Generator().manual_seed(self.seed),
                                      **star_options)
        full_labels = torch.full((n,), -1, dtype=torch.long)
        full_labels[nodes] = torch.from_numpy(labels)
        outside = torch.ones(n, dtype=torch.bool)
        outside[nodes] = False
        attached = torch.nonzero(outside).flatten()  # isolated nodes, unclustered components
        if c.component == "all" and attached.numel():
            def rows_of(ids: Tensor) -> np.ndarray:
                x = store.features(ids) if store is not None else graph.x[ids.to(graph.x.device)]
                return x.detach().cpu().numpy()
            star = torch.from_numpy(nearest_by_features(rows_of(attached),
                                                        rows_of(stars.centres)))
            stars = attach_leaves(stars, attached, star)
            full_labels[attached] = full_labels[stars.centres[star]]
        in_stars = int(stars.centres.numel() + stars.members.numel())
        coverage = {"nodes_total": n, "nodes_in_stars": in_stars,
                    "nodes_clustered": int(nodes.numel()),
                    "nodes_attached": int(attached.numel()) if c.component == "all" else 0,
                    "isolated_nodes": spec["isolated"], "components": spec["num_components"],
                    "components_clustered": int(np.count_nonzero(alloc))}
        if c.component == "largest" and attached.numel():
            warnings.warn(f"e2neg.component=largest: {attached.numel()} of {n} nodes are outside "
                          f"the largest component and enter no star (use component=all)",
                          RuntimeWarning, stacklevel=3)
        return {"graph": stars, "labels": full_labels, "spectral": spec["summary"],
                "coverage": coverage}

    def can_train_from_store(self) -> bool:
        """Always: the spectral step runs on the job's shards (or on the store's edge list,
        gathered once, without them), the stars come from the centres' neighbourhoods and the
        star batch's rows from the store (class docstring). Evaluation (:meth:`embed`) still
        takes the whole graph."""
        return True

    def prepare(self, data: Data | None, cache_dir: Path | None = None,
                prepared: dict[str, Any] | None = None) -> None:
        """Spectral step, k-means, centres and stars (cached; taken from the checkpoint on a
        resume), then the training batch. ``data=None``: all from ``work.services.store``."""
        start = time.perf_counter()
        graph: Data | BaseGraphStore | None = data if data is not None \
            else self.work.services.store
        if graph is None:
            raise ValueError("e2neg needs the graph (data) or a graph store from the trainer")
        if prepared is not None:
            stars = prepared["stars"]
            self.stats["cache"] = "checkpoint"
        else:
            stars, hit = _load_or_build(
                self._cache_path(cache_dir, "stars", graph, self._star_params()),
                lambda: self._build_stars(graph, cache_dir))
            if hit:
                self.stats["cache"] = "hit"
        self._stars = stars
        star_graph = stars["graph"]
        node_ids, local_edges, centre_pos = star_graph.subgraph()
        if data is not None:
            dev = data.x.device
            x = data.x[node_ids.to(dev)]
        else:
            dev = self.work.device
            x = graph.features(node_ids).to(dev)
        self.batch = StarBatch(x=x, edge_index=local_edges.to(dev),
                               centres=centre_pos.to(dev), node_ids=node_ids)
        self.labels = stars["labels"]
        self.star_graph = star_graph
        self.stats.update({**stars.get("coverage", {}),
                           "spectral": stars["spectral"],
                           "centres": int(star_graph.centres.numel()),
                           "leaves": int(star_graph.members.numel()),
                           "hops_max": int(star_graph.hops.max()) if star_graph.hops.numel()
                           else 0,
                           "prepare_seconds": time.perf_counter() - start})
        y = getattr(data, "y", None) if data is not None else (
            graph.labels(torch.arange(graph.num_nodes))
            if graph.num_classes and not graph.multilabel else None)
        if y is not None and y.dim() == 1:
            self.stats["purity"] = cluster_purity(self.labels.numpy(), y.cpu().numpy())

    def prepared_state(self) -> dict[str, Any] | None:
        """The star graph, cluster labels and spectral summary (a few MB even at ogbn-proteins
        size), so a resumed run skips the spectral step."""
        return {"stars": self._stars} if self.batch is not None else None

    # --------------------------------------------------------------------- training

    def batches(self, data: Data, epoch: int, start_step: int = 0) -> Iterator[Any]:
        if self.batch is None:
            raise RuntimeError("E2Neg.prepare(data, cache_dir) must run before training")
        if start_step == 0:
            yield self.batch, self.work.share(self.batch.centres)

    def views(self, batch: StarBatch) -> tuple[Tensor, Tensor]:
        """Projected centre embeddings :math:`(K', d)` of two independently augmented views."""
        a, g = self.config.augment, self.augment_generator
        xs = []
        for edge_drop, feature_mask in ((a.edge_drop_1, a.feature_mask_1),
                                        (a.edge_drop_2, a.feature_mask_2)):
            x = batch.x
            if self.cfg.permute_centres:
                x, _ = permute_rows(x, batch.centres, g)
            xs.extend(augment_view(x, batch.edge_index, edge_drop, feature_mask, generator=g))
        return self.module("model")(*xs, targets=batch.centres)

    def loss(self, h1: Tensor, h2: Tensor, share: Share | None = None) -> Tensor:
        """E2Neg's centre-only InfoNCE (GRACE's symmetric ``semi_loss`` on the K' centres),
        summed over this rank's anchor centres and divided by ``2 * share.total``."""
        ids = torch.arange(h1.size(0), device=h1.device)
        own = ids if share is None else share.ids.to(h1.device)
        total = ids.numel() if share is None else share.total
        l1 = grace_block_loss(h1, h2, own, ids, self.cfg.tau, self.cfg.intra_view)
        l2 = grace_block_loss(h2, h1, own, ids, self.cfg.tau, self.cfg.intra_view)
        return (l1.sum() + l2.sum()) / (2 * total)

    def training_step(self, batch: Any) -> dict[str, float]:
        stars, share = batch
        self.train()
        h1, h2 = self.views(stars)
        stats: dict[str, float] = {"anchors": float(share.ids.numel())}
        self.counters["steps"] += 1
        if self.nmn is None:
            opt = self.optimizers["model"]
            loss = self.loss(h1, h2, share)
            self.check_finite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return {"loss": loss.item(), **stats}
        anchor_ids = None if share.complete else share.ids.to(h1.device)

        def nml(u: Tensor, v: Tensor, detached: bool) -> tuple[Tensor, dict[str, Tensor]]:
            mu, mv = (u.detach(), v.detach()) if detached else (u, v)
            return nml_loss(u, v, self.module("nmn")(mu, mv), self.cfg.tau, self.cfg.nml_c,
                            anchor_ids=anchor_ids, normalizer=share.total)

        # NML-GCL's schedule, the same helper as NML-GCL itself
        out = bilevel_step(h1, h2, nml, encoder_opt=self.optimizers["model"],
                           metric_opt=self.optimizers["nmn"],
                           inner_steps=self.cfg.nml_inner_steps, encoder=self.model,
                           metric=self.nmn, check_finite=self.check_finite,
                           counters=self.counters)
        return {**out, **stats}

    @torch.no_grad()
    def embed(self, data: Data) -> Tensor:
        """The encoder on the full original graph (sparse products, ``embed_sparse``)."""
        self.eval()
        return self.encoder.embed_sparse(data.x, data.edge_index)

    def describe(self) -> dict[str, Any]:
        """Preprocessing statistics (centres, leaves, nodes covered / total, purity,
        eigen-residual, cache use)."""
        return {**self.stats, "config": asdict(self.cfg)}
