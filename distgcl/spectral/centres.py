r"""Clusters and cluster centres from a spectral embedding (E2Neg, step A).

E2Neg clusters the rows of the spectral embedding :math:`\mathbf{U}_K \in \mathbb{R}^{N\times K}`
with k-means (columns standardized first) and keeps one *centre* node per non-empty cluster: the
node of largest **spectral centrality** :math:`\lVert \mathbf{U}_K[i,:]\rVert_2` (the
*unstandardized* row norm; paper and official ``cal_centrality``), or, as an option, the node
closest to the k-means centroid.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

CentreRule = Literal["norm", "centroid"]


def kmeans_space(embedding: np.ndarray, standardize: bool = True, rtol: float = 1e-8
                 ) -> np.ndarray:
    r"""The space k-means runs in: the columns of :math:`\mathbf{U}_K` that vary on these rows,
    z-scored when ``standardize`` (E2Neg's ``StandardScaler``).

    On one connected component of a multi-component graph, the eigenvectors of the *other*
    components are zero up to the solver's rounding (:math:`\sim 10^{-14}`); z-scoring would
    blow that noise up to unit variance and let it drive the clusters. A column whose standard
    deviation is below ``rtol`` times the largest one is therefore dropped first (at least one
    column is always kept).

    Shapes:
        - **input:** ``embedding`` :math:`(N, K)`
        - **output:** :math:`(N, K')`, :math:`1 \le K' \le K`
    """
    feats = np.asarray(embedding, dtype=np.float64)
    spread = feats.std(axis=0)
    keep = spread > rtol * spread.max() if spread.size else spread.astype(bool)
    if not keep.any():
        keep[np.argmax(spread)] = True
    feats = feats[:, keep]
    return StandardScaler().fit_transform(feats) if standardize else feats


def spectral_clusters(embedding: np.ndarray, k: int, *, seed: int = 0, minibatch: bool = True,
                      batch_size: int = 2000, n_init: int = 10, standardize: bool = True
                      ) -> tuple[np.ndarray, np.ndarray]:
    r"""k-means on the spectral embedding.

    Args:
        embedding (ndarray): :math:`\mathbf{U}_K` :math:`(N, K)`.
        k (int): number of clusters.
        seed (int, optional): ``random_state`` of scikit-learn's k-means (default: ``0``).
        minibatch (bool, optional): :class:`~sklearn.cluster.MiniBatchKMeans` (E2Neg's choice,
            ``batch_size=2000``) instead of full :class:`~sklearn.cluster.KMeans`
            (default: :obj:`True`).
        batch_size (int, optional): mini-batch size (default: ``2000``).
        n_init (int, optional): k-means restarts (default: ``10``, as E2Neg).
        standardize (bool, optional): z-score every column first (E2Neg's ``StandardScaler``)
            (default: :obj:`True`).

    k-means runs in :func:`kmeans_space` (numerically constant columns dropped, then z-scored).

    Returns:
        (ndarray, ndarray): cluster id per node :math:`(N,)` in :math:`[0, k)`, and the centroids
        :math:`(k, K')` in the space k-means ran in.
    """
    if not 1 <= k <= embedding.shape[0]:
        raise ValueError(f"k must be in [1, N] = [1, {embedding.shape[0]}] (got {k})")
    feats = kmeans_space(embedding, standardize)
    if minibatch:
        km = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, random_state=seed,
                             n_init=n_init)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=n_init)
    labels = km.fit_predict(feats)
    return labels.astype(np.int64), km.cluster_centers_


def _argmax_per_group(score: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """For every group id present (ascending), the index of its highest ``score`` (ties: lowest
    index). Vectorized: one lexsort."""
    order = np.lexsort((np.arange(score.size), -score, groups))
    g = groups[order]
    first = np.ones(g.size, dtype=bool)
    first[1:] = g[1:] != g[:-1]
    return order[first]


def select_centres(embedding: np.ndarray, labels: np.ndarray, *, rule: CentreRule = "norm",
                   centroids: np.ndarray | None = None, standardize: bool = True) -> np.ndarray:
    r"""One centre node per non-empty cluster, in ascending cluster order.

    * ``rule="norm"`` (paper's spectral centrality):
      :math:`c_k = \arg\max_{i \in C_k} \lVert \mathbf{U}_K[i,:]\rVert_2` on the unstandardized
      embedding.
    * ``rule="centroid"``: :math:`c_k = \arg\min_{i \in C_k} \lVert z_i - \mu_k\rVert_2`, with
      :math:`z` the embedding in :func:`kmeans_space` (as :func:`spectral_clusters`) and
      :math:`\mu_k` the given ``centroids`` (or the cluster means when :obj:`None`).

    Nodes with a negative label (not clustered) are ignored.

    Shapes:
        - **input:** ``embedding`` :math:`(N, K)`, ``labels`` :math:`(N,)`
        - **output:** node ids :math:`(K',)`, :math:`K' \le` number of clusters
    """
    emb = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels)
    valid = np.flatnonzero(labels >= 0)
    lab = labels[valid]
    if rule == "norm":
        score = np.linalg.norm(emb[valid], axis=1)
    elif rule == "centroid":
        z = kmeans_space(emb[valid], standardize)  # the space spectral_clusters ran in
        if centroids is None:
            k = int(lab.max()) + 1
            counts = np.bincount(lab, minlength=k).astype(np.float64)
            sums = np.zeros((k, z.shape[1]))
            np.add.at(sums, lab, z)
            centroids = sums / np.maximum(counts, 1)[:, None]
        score = -np.linalg.norm(z - centroids[lab], axis=1)
    else:
        raise ValueError(f"unknown centre rule {rule!r}; known: norm, centroid")
    return valid[_argmax_per_group(score, lab)]


def cluster_purity(labels: np.ndarray, classes: np.ndarray) -> float:
    r"""Purity :math:`\frac{1}{N}\sum_k \max_c |C_k \cap Y_c|` of a clustering against class
    labels (nodes with a negative cluster id or class are ignored).

    Shapes:
        - **input:** ``labels`` :math:`(N,)`, ``classes`` :math:`(N,)`
        - **output:** float in :math:`[0, 1]`
    """
    labels, classes = np.asarray(labels), np.asarray(classes)
    keep = (labels >= 0) & (classes >= 0)
    labels, classes = labels[keep], classes[keep]
    if labels.size == 0:
        return float("nan")
    table = np.zeros((labels.max() + 1, classes.max() + 1), dtype=np.int64)
    np.add.at(table, (labels, classes), 1)
    return float(table.max(axis=1).sum() / labels.size)


def allocate_clusters(sizes: np.ndarray, k: int) -> np.ndarray:
    r"""Share :math:`k` clusters among connected components by the D'Hondt rule: each next
    cluster goes to the component :math:`C` with the largest :math:`|C| / (k_C + 1)` (ties:
    larger component, then lower id), never more clusters than nodes.

    A component gets a cluster only when it is at least as large as the clusters the larger
    components would get, so tiny components do not take centres from big ones; equal
    components share equally.

    Shapes:
        - **input:** ``sizes`` :math:`(c,)` component sizes
        - **output:** :math:`(c,)` clusters per component, summing to
          :math:`\min(k, \sum |C|)`
    """
    import heapq

    sizes = np.asarray(sizes, dtype=np.int64)
    alloc = np.zeros(sizes.size, dtype=np.int64)
    heap = [(-float(s), -int(s), i) for i, s in enumerate(sizes) if s > 0]
    heapq.heapify(heap)
    for _ in range(int(k)):
        if not heap:
            break
        _, neg_size, i = heapq.heappop(heap)
        alloc[i] += 1
        if alloc[i] < sizes[i]:
            heapq.heappush(heap, (-float(sizes[i]) / (alloc[i] + 1), neg_size, i))
    return alloc


def nearest_by_features(x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    r"""For every row of ``x`` the index of the most cosine-similar row of ``targets``
    (ties and all-zero rows: the lowest index).

    Shapes:
        - **input:** ``x`` :math:`(A, F)`, ``targets`` :math:`(K, F)`
        - **output:** :math:`(A,)` in :math:`[0, K)`
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    out = np.empty(x.shape[0], dtype=np.int64)
    for lo in range(0, x.shape[0], 65536):  # (chunk x K) similarities at a time
        out[lo:lo + 65536] = np.argmax(xn[lo:lo + 65536] @ tn.T, axis=1)
    return out
