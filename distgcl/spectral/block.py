r"""Block eigensolvers for the largest eigenpairs of :math:`\mathbf{S} = \mathbf{D}^{-1/2}
\mathbf{A}\mathbf{D}^{-1/2}` (= the smallest of :math:`\mathbf{L} = \mathbf{I} - \mathbf{S}`),
written once against an abstract *block space*.

A :class:`BlockSpace` owns the operator :math:`\mathbf{S}` and row-distributed blocks of vectors
(:math:`N \times b`); the solvers only ever see opaque block handles and small dense matrices
(:math:`b \times b`, :math:`3b \times 3b`, :math:`c \times b`). :class:`LocalBlockSpace` keeps a
block as one torch tensor in this process; :class:`distgcl.distributed.linalg.ShardedBlockSpace`
keeps it as row blocks in Ray's object store, computed by the graph-shard actors. The same
solver code runs on both, so their results agree to rounding.

Conventions (:mod:`distgcl.spectral.laplacian`): isolated nodes have :math:`S_{ii} = 1`; the
trivial eigenvectors :math:`y_C = D^{1/2}\mathbf{1}_C / \lVert D^{1/2}\mathbf{1}_C\rVert` (one per
connected component, eigenvalue 1 of :math:`\mathbf{S}`) are *deflated*: every block is kept
orthogonal to them (:meth:`BlockSpace.deflate`), and they are returned first with
:math:`\lambda = 0`.

Solvers (both look for the :math:`m = k - c` largest non-trivial eigenvalues :math:`\theta` of
:math:`\mathbf{S}`, i.e. :math:`\lambda = 1 - \theta`):

* :func:`chebyshev_subspace`: Chebyshev-filtered subspace iteration (Zhou & Saad, 2007). Each
  outer step applies the scaled Chebyshev polynomial :math:`p_d(\mathbf{S})` that is bounded by 1
  on the unwanted interval :math:`[a, b]` (:math:`a` a lower bound of the spectrum from a short
  Lanczos run, :math:`b` the smallest Ritz value of the block) and grows fast above it, then
  orthonormalizes and does a Rayleigh-Ritz step. Converged leading pairs are locked. With a
  block larger than :math:`m` it returns a good invariant subspace (what k-means needs) after
  few products; ``subspace_tol`` stops it once that subspace has settled (the projector
  change between steps or a Davis-Kahan residual bound, on the largest or, ``rms``, the
  root-mean-square principal angle), ``max_matvecs`` is the ceiling.
* :func:`block_lobpcg`: LOBPCG (Knyazev, 2001): Rayleigh-Ritz on :math:`[X, R, P]` from the Gram
  matrices, soft locking (converged columns stay in :math:`X` but leave :math:`R` and :math:`P`).

Random starting blocks are a pure function of ``(seed, original node id, column)``
(:func:`hashed_normal`), so every space and every partition starts from the same block.
"""
from __future__ import annotations

import abc
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from tqdm.auto import tqdm

Block = Any
"""An opaque :math:`(N, b)` block handle of a :class:`BlockSpace`."""
Coefficient = Union[float, np.ndarray]
"""A scalar (``x * a``) or a :math:`(b_{in}, b_{out})` matrix (``x @ M``)."""

METHODS: tuple[str, ...] = ("chebyshev", "lobpcg")


# ----------------------------------------------------------------------------- random blocks

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hashed_normal(seed: int, rows: np.ndarray, cols: int, dtype: Any = np.float64,
                  chunk: int = 1 << 16) -> np.ndarray:
    r"""Standard normal entries :math:`X_{ij} = g(\text{seed}, \text{rows}_i, j)` as a pure
    function of the seed, the (global, original) row id and the column.

    A counter-based generator (splitmix64 of the counter, two uniforms, Box-Muller): a block
    sharded over any number of processes, in any row order, has exactly the entries of the
    unsharded block. (numpy's generators are sequential streams, so they cannot do this.)

    Shapes:
        - **input:** ``rows`` :math:`(n,)` non-negative ids
        - **output:** :math:`(n, \text{cols})`
    """
    rows = np.asarray(rows, dtype=np.int64).astype(np.uint64)
    out = np.empty((rows.size, cols), dtype=dtype)
    key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    col = np.arange(cols, dtype=np.uint64)
    scale = 2.0 ** -53
    with np.errstate(over="ignore"):
        for lo in range(0, rows.size, chunk):
            counter = (rows[lo:lo + chunk, None] * np.uint64(cols) + col[None, :]) * np.uint64(2)
            u1 = ((_splitmix64(counter ^ key) >> np.uint64(11)).astype(np.float64) + 0.5) * scale
            u2 = ((_splitmix64((counter + np.uint64(1)) ^ key) >> np.uint64(11))
                  .astype(np.float64) + 0.5) * scale
            out[lo:lo + chunk] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return out


# ----------------------------------------------------------------------------- the protocol

class BlockSpace(abc.ABC):
    r"""Row-distributed blocks of vectors and the operator :math:`\mathbf{S}` on them.

    All small results (:meth:`gram`, :meth:`sq_norms`) are returned as float64 numpy arrays;
    everything :math:`N`-sized stays behind the handles until :meth:`gather`.
    """

    num_rows: int
    """:math:`N`."""
    num_components: int
    """:math:`c`, the number of trivial eigenvectors (connected components)."""
    dtype: Any
    """Working precision of the blocks and of :math:`\\mathbf{S}`."""

    @abc.abstractmethod
    def random(self, cols: int, seed: int) -> Block:
        """A block of :func:`hashed_normal` entries (rows = original node ids)."""

    @abc.abstractmethod
    def matmul(self, x: Block) -> Block:
        r""":math:`\mathbf{S}\mathbf{X}`."""

    @abc.abstractmethod
    def combine(self, terms: Sequence[tuple[Block, Coefficient]]) -> Block:
        r""":math:`\sum_i \mathbf{X}_i \mathbf{M}_i` (a scalar :math:`M_i` scales its block)."""

    @abc.abstractmethod
    def take(self, x: Block, columns: np.ndarray) -> Block:
        """The columns ``columns`` of ``x`` (in that order)."""

    @abc.abstractmethod
    def gram(self, left: Sequence[Block], right: Sequence[Block]) -> np.ndarray:
        r""":math:`[\mathbf{X}_1, \dots]^\top [\mathbf{Y}_1, \dots]` (float64)."""

    @abc.abstractmethod
    def sq_norms(self, x: Block) -> np.ndarray:
        r"""Squared column norms :math:`(b,)` (float64)."""

    @abc.abstractmethod
    def deflate(self, x: Block) -> Block:
        r""":math:`(\mathbf{I} - \mathbf{Y}\mathbf{Y}^\top)\mathbf{X}` for the trivial basis
        :math:`\mathbf{Y}`."""

    @abc.abstractmethod
    def null_block(self, cols: int) -> Block:
        r"""The first ``cols`` trivial eigenvectors :math:`y_C` (by component id) as a block."""

    @abc.abstractmethod
    def gather(self, x: Block, out: np.ndarray | None = None, col: int = 0) -> np.ndarray:
        """The block as one float64 :math:`(N, b)` array in the original node order (written
        into ``out[:, col:col + b]`` and returning ``out`` when given)."""

    @abc.abstractmethod
    def cols(self, x: Block) -> int:
        """Number of columns of ``x``."""


class LocalBlockSpace(BlockSpace):
    r""":class:`BlockSpace` in this process: blocks are torch tensors, :math:`\mathbf{S}` a torch
    CSR matrix with int32 indices, applied to column slices of ``chunk`` columns
    (``environment.md`` §8: 8-16 columns with int32 indices is 2.6x faster than one wide product
    at ogbn-proteins size).

    Args:
        s (Tensor): :math:`\mathbf{S}` :math:`(N, N)` as ``torch.sparse_csr_tensor``.
        null_space (ndarray): orthonormal trivial basis :math:`\mathbf{Y}` :math:`(N, c)`.
        chunk (int, optional): columns per sparse product (default: ``16``).
        device (torch.device or str, optional): where :math:`\mathbf{S}` and the blocks live,
            e.g. ``"cuda"`` (default: ``s``'s device). Small results come back as numpy arrays.
    """

    def __init__(self, s: Tensor, null_space: np.ndarray, chunk: int = 16,
                 device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else s.device
        self.s = s.to(self.device)
        self.dtype = s.dtype
        self.num_rows = int(s.shape[0])
        self.y = torch.from_numpy(np.ascontiguousarray(null_space, dtype=np.float64)).to(
            self.device, s.dtype)
        self.num_components = int(self.y.shape[1])
        self.chunk = int(chunk)

    @classmethod
    def from_laplacian(cls, lap: sp.spmatrix, null_space: np.ndarray,
                       dtype: torch.dtype = torch.float64, chunk: int = 16,
                       device: torch.device | str | None = None) -> "LocalBlockSpace":
        r"""Build :math:`\mathbf{S} = \mathbf{I} - \mathbf{L}` from a normalized Laplacian
        (isolated nodes: :math:`L_{ii} = 0`, so :math:`S_{ii} = 1`)."""
        lap = sp.csr_matrix(lap)
        n = lap.shape[0]
        index_dtype = np.int32 if max(lap.nnz, n) < 2**31 - 1 else np.int64
        lap.sum_duplicates()
        indptr, indices = lap.indptr, lap.indices
        data = -lap.data.astype(np.float64)
        rows = np.repeat(np.arange(n), np.diff(indptr))
        diag = rows == indices
        has_diag = np.zeros(n, dtype=bool)
        has_diag[rows[diag]] = True
        data[diag] += 1.0
        del rows
        if not has_diag.all():  # S_ii = 1 - L_ii also where L stores no diagonal entry
            extra = sp.diags((~has_diag).astype(np.float64), format="csr")
            m = (sp.csr_matrix((data, indices, indptr), shape=lap.shape) + extra).tocsr()
            m.sort_indices()
            indptr, indices, data = m.indptr, m.indices, m.data
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            s = torch.sparse_csr_tensor(torch.from_numpy(indptr.astype(index_dtype)),
                                        torch.from_numpy(indices.astype(index_dtype)),
                                        torch.from_numpy(data).to(dtype), size=(n, n),
                                        check_invariants=False)
        return cls(s, null_space, chunk, device)

    @classmethod
    def from_adjacency(cls, adj: sp.spmatrix, null_space: np.ndarray,
                       dtype: torch.dtype = torch.float64, chunk: int = 16,
                       device: torch.device | str | None = None) -> "LocalBlockSpace":
        r"""Build :math:`\mathbf{S} = \mathbf{D}^{-1/2}\mathbf{A}\mathbf{D}^{-1/2}` straight from a
        symmetric adjacency without self-loops (e.g. :func:`~distgcl.spectral.laplacian.adjacency`;
        isolated nodes get :math:`S_{ii} = 1`): the same operator as
        :meth:`from_laplacian` of its Laplacian, in one pass over the entries instead of the
        two sparse products, the identity shift and the conversion back (why it exists: at
        ogbn-proteins size the operator build rivals the solve)."""
        from distgcl.spectral.laplacian import degrees

        adj = sp.csr_matrix(adj)
        adj.sort_indices()
        n = adj.shape[0]
        deg = degrees(adj)
        isolated = deg == 0
        if isolated.any():  # S_ii = 1 there: rare, so the general (slower) path
            return cls.from_laplacian(sp.identity(n, format="csr") -
                                      cls._normalized(adj, deg, isolated), null_space, dtype,
                                      chunk, device)
        inv = 1.0 / np.sqrt(deg)
        data = np.repeat(inv, np.diff(adj.indptr))
        data *= inv[adj.indices]
        if adj.dtype != np.bool_:
            data *= adj.data
        index_dtype = np.int32 if max(adj.nnz, n) < 2**31 - 1 else np.int64
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
            s = torch.sparse_csr_tensor(torch.from_numpy(adj.indptr.astype(index_dtype)),
                                        torch.from_numpy(adj.indices.astype(index_dtype)),
                                        torch.from_numpy(data).to(dtype), size=(n, n),
                                        check_invariants=False)
        return cls(s, null_space, chunk, device)

    @staticmethod
    def _normalized(adj: sp.csr_matrix, deg: np.ndarray, isolated: np.ndarray) -> sp.csr_matrix:
        inv = sp.diags(1.0 / np.sqrt(np.where(isolated, 1.0, deg)))
        return (inv @ adj.astype(np.float64) @ inv + sp.diags(isolated.astype(np.float64))
                ).tocsr()

    def random(self, cols: int, seed: int) -> Tensor:
        return torch.from_numpy(hashed_normal(seed, np.arange(self.num_rows), cols)).to(
            self.device, self.dtype)

    def matmul(self, x: Tensor) -> Tensor:
        return spmm(self.s, x, self.chunk)

    def combine(self, terms: Sequence[tuple[Tensor, Coefficient]]) -> Tensor:
        return combine_tensors(terms)

    def take(self, x: Tensor, columns: np.ndarray) -> Tensor:
        return x[:, torch.as_tensor(np.asarray(columns, dtype=np.int64), device=x.device)
                 ].contiguous()

    def gram(self, left: Sequence[Tensor], right: Sequence[Tensor]) -> np.ndarray:
        return gram_tensors(left, right)

    def sq_norms(self, x: Tensor) -> np.ndarray:
        return (x.double() ** 2).sum(0).cpu().numpy()

    def deflate(self, x: Tensor) -> Tensor:
        if self.num_components == 0:
            return x
        return x - self.y @ (self.y.T @ x)

    def null_block(self, cols: int) -> Tensor:
        return self.y[:, :cols].clone()

    def gather(self, x: Tensor, out: np.ndarray | None = None, col: int = 0) -> np.ndarray:
        if out is None:
            return x.double().cpu().numpy()
        out[:, col:col + x.shape[1]] = x.cpu().numpy()
        return out

    def cols(self, x: Tensor) -> int:
        return int(x.shape[1])


# ----------------------------------------------------------------------------- tensor kernels
# Shared by LocalBlockSpace and the shard actors (distgcl.distributed.shards), so both compute
# bit-for-bit the same per-row arithmetic.

def spmm(s: Tensor, x: Tensor, chunk: int = 16) -> Tensor:
    r""":math:`\mathbf{S}\mathbf{X}` for a torch CSR :math:`\mathbf{S}`, ``chunk`` columns at a
    time (column slices of a row-major block are copied contiguous first)."""
    b = x.shape[1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        if b <= chunk:
            return torch.sparse.mm(s, x.contiguous())
        out = torch.empty((s.shape[0], b), dtype=x.dtype, device=x.device)
        for lo in range(0, b, chunk):
            out[:, lo:lo + chunk] = torch.sparse.mm(s, x[:, lo:lo + chunk].contiguous())
        return out


def combine_tensors(terms: Sequence[tuple[Tensor, Coefficient]]) -> Tensor:
    r""":math:`\sum_i \mathbf{X}_i \mathbf{M}_i` on tensors (``M_i`` float or matrix)."""
    out: Tensor | None = None
    for x, coef in terms:
        if np.isscalar(coef) or np.ndim(coef) == 0:
            part = x * float(coef)
        else:
            m = np.asarray(coef, dtype=np.float64)
            if m.shape[0] == m.shape[1] and not np.any(m - np.diag(np.diagonal(m))):
                part = x * torch.from_numpy(np.diagonal(m).copy()).to(x.device, x.dtype)
            else:
                part = x @ torch.from_numpy(m).to(x.device, x.dtype)
        out = part if out is None else out.add_(part)
    if out is None:
        raise ValueError("combine needs at least one term")
    return out


def gram_tensors(left: Sequence[Tensor], right: Sequence[Tensor]) -> np.ndarray:
    r""":math:`[\mathbf{X}_i]^\top [\mathbf{Y}_j]`, computed in the blocks' precision and
    returned as float64.

    Why not float64 throughout: casting float32 blocks made every Gram 5x slower (an
    :math:`N \times 80` Gram at a quarter of ogbn-proteins: 15 ms against 3 ms), and the Grams
    were about a fifth of the solve; the float32 Gram's rounding (:math:`\sim\sqrt{N}
    \epsilon_{32}`) is below what the float32 blocks carry anyway, and the second SVQB pass of
    :func:`orthonormalize` repairs what the first one leaves."""
    def side(blocks: Sequence[Tensor]) -> Tensor:  # no concatenation copy for one block
        return blocks[0] if len(blocks) == 1 else torch.cat(list(blocks), dim=1)

    a = side(left)
    b = a if list(map(id, right)) == list(map(id, left)) else side(right)
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    return (a.T @ b).double().cpu().numpy()


# ----------------------------------------------------------------------------- building blocks

def _placement(sizes: Sequence[int]) -> list[np.ndarray]:
    """Matrices that place blocks of the given widths side by side: ``[X_1, X_2, ...]`` =
    ``sum_i X_i @ E_i``."""
    total = int(sum(sizes))
    out, start = [], 0
    for s in sizes:
        e = np.zeros((s, total))
        e[np.arange(s), start + np.arange(s)] = 1.0
        out.append(e)
        start += s
    return out


def concat(space: BlockSpace, blocks: Sequence[Block]) -> Block:
    """``[X_1, X_2, ...]`` as one block."""
    blocks = [b for b in blocks if space.cols(b) > 0]
    if len(blocks) == 1:
        return blocks[0]
    sizes = [space.cols(b) for b in blocks]
    return space.combine(list(zip(blocks, _placement(sizes))))


def project_out(space: BlockSpace, x: Block, basis: Sequence[Block], passes: int = 2) -> Block:
    r""":math:`\mathbf{X} - \mathbf{Q}(\mathbf{Q}^\top\mathbf{X})` for orthonormal blocks
    :math:`\mathbf{Q} = [\text{basis}]` (classical Gram-Schmidt, ``passes`` times)."""
    basis = [b for b in basis if space.cols(b) > 0]
    if not basis:
        return x
    sizes = [space.cols(b) for b in basis]
    for _ in range(passes):
        g = space.gram(basis, [x])
        terms: list[tuple[Block, Coefficient]] = [(x, 1.0)]
        start = 0
        for b, s in zip(basis, sizes):
            terms.append((b, -g[start:start + s]))
            start += s
        x = space.combine(terms)
    return x


def svqb(gram: np.ndarray, rcond: float) -> np.ndarray:
    r"""A transform :math:`\mathbf{T}` with :math:`(\mathbf{X}\mathbf{T})^\top(\mathbf{X}\mathbf{T})
    = \mathbf{I}` from :math:`\mathbf{G} = \mathbf{X}^\top\mathbf{X}` (Stathopoulos & Wu's SVQB:
    scale to unit diagonal, eigendecompose, drop directions below ``rcond`` of the largest).

    Shapes:
        - **input:** :math:`(b, b)`
        - **output:** :math:`(b, r)`, :math:`r \le b` the numerical rank
    """
    g = 0.5 * (gram + gram.T)
    diag = np.diag(g).copy()
    if diag.size == 0 or diag.max() <= 0:
        return np.zeros((gram.shape[0], 0))
    d = 1.0 / np.sqrt(np.where(diag > diag.max() * 1e-300, diag, np.inf))
    w, v = np.linalg.eigh(d[:, None] * g * d[None, :])
    keep = w > rcond * max(w.max(), 1e-300)
    return (d[:, None] * v[:, keep]) / np.sqrt(w[keep])[None, :]


def _rcond(space: BlockSpace) -> float:
    return 1e-7 if space.dtype in (torch.float32, np.float32) else 1e-13


def orthonormalize(space: BlockSpace, x: Block, *, against: Sequence[Block] = (),
                   refill_seed: int | None = None, deflate: bool = True) -> Block:
    r"""An orthonormal basis of the span of ``x``, orthogonal to the trivial null space and to
    ``against`` (orthonormal blocks).

    Two SVQB passes. Directions lost to rank deficiency are refilled with fresh random vectors
    when ``refill_seed`` is given (so the block keeps its width), else dropped.
    """
    want = space.cols(x)
    rcond = _rcond(space)
    seed = refill_seed
    for attempt in range(4):
        if deflate:
            x = space.deflate(x)
        x = project_out(space, x, against)
        for _ in range(2):
            t = svqb(space.gram([x], [x]), rcond)
            x = space.combine([(x, t)])
        have = space.cols(x)
        if have >= want or seed is None:
            return x
        extra = space.random(want - have, seed + 7919 * (attempt + 1))
        against = [*against, x]
        fresh = orthonormalize(space, extra, against=against, deflate=deflate)
        x = concat(space, [x, fresh])
        against = list(against[:-1])
    return x


def rayleigh_ritz(space: BlockSpace, x: Block, sx: Block) -> tuple[np.ndarray, Block, Block]:
    r"""Ritz pairs of :math:`\mathbf{S}` in the span of an orthonormal ``x``: returns
    :math:`\theta` (descending), :math:`\mathbf{X}\mathbf{C}` and
    :math:`\mathbf{S}\mathbf{X}\mathbf{C}`."""
    h = space.gram([x], [sx])
    theta, c = np.linalg.eigh(0.5 * (h + h.T))
    order = np.argsort(-theta, kind="stable")
    theta, c = theta[order], c[:, order]
    return theta, space.combine([(x, c)]), space.combine([(sx, c)])


def residual_norms(space: BlockSpace, x: Block, sx: Block, theta: np.ndarray) -> np.ndarray:
    r""":math:`\lVert \mathbf{S}x_j - \theta_j x_j\rVert` (= the residual in
    :math:`\mathbf{L}` of :math:`\lambda_j = 1 - \theta_j`)."""
    r = space.combine([(sx, np.eye(theta.size)), (x, -np.diag(theta))])
    return np.sqrt(np.maximum(space.sq_norms(r), 0.0))


def spectrum_lower_bound(space: BlockSpace, steps: int = 30, seed: int = 0,
                         counter: "_Counter | None" = None) -> float:
    r"""A lower bound :math:`a \le \theta_{\min}(\mathbf{S})` on the deflated space, from
    ``steps`` Lanczos steps on one vector (full reorthogonalization): the smallest Ritz value,
    minus the larger of its residual bound and 5 % of the Ritz spread, clamped to
    :math:`\ge -1` (the spectrum of :math:`\mathbf{S}` lies in :math:`[-1, 1]`)."""
    q = space.deflate(space.random(1, seed + 104729))
    q = space.combine([(q, 1.0 / math.sqrt(max(space.sq_norms(q)[0], 1e-300)))])
    basis = [q]
    alphas: list[float] = []
    betas: list[float] = []
    for _ in range(min(steps, max(space.num_rows - space.num_components - 1, 1))):
        w = space.deflate(space.matmul(q))
        if counter is not None:
            counter.add(1)
        alphas.append(float(space.gram([q], [w])[0, 0]))
        w = project_out(space, w, basis)
        beta = math.sqrt(max(space.sq_norms(w)[0], 0.0))
        betas.append(beta)
        if beta < 1e-10:
            break
        q = space.combine([(w, 1.0 / beta)])
        basis.append(q)
    t = np.diag(alphas) + np.diag(betas[:len(alphas) - 1], 1) + np.diag(betas[:len(alphas) - 1],
                                                                         -1)
    w, v = np.linalg.eigh(t)
    resid = abs(betas[len(alphas) - 1] * v[-1, 0])
    spread = float(w[-1] - w[0])
    return max(-1.0, float(w[0]) - max(resid, 0.05 * spread, 1e-3))


class _Counter:
    """Counts block products and single-vector products, and drives a progress bar."""

    def __init__(self, bar: tqdm) -> None:
        self.products = 0
        self.matvecs = 0
        self.bar = bar

    def add(self, cols: int) -> None:
        self.products += 1
        self.matvecs += cols
        self.bar.update(cols)


@dataclass
class BlockResult:
    r"""The non-trivial part of a block solve (largest eigenpairs of the deflated
    :math:`\mathbf{S}`)."""

    theta: np.ndarray
    r""":math:`(m,)` eigenvalues of :math:`\mathbf{S}`, descending."""
    vectors: Block
    """:math:`(N, m)` orthonormal block, column :math:`j` pairs with ``theta[j]``."""
    residuals: np.ndarray
    r""":math:`(m,)`, :math:`\lVert \mathbf{S}x_j - \theta_j x_j\rVert` from a final product."""
    iterations: int
    """Outer iterations (Rayleigh-Ritz steps)."""
    products: int
    """Applications of :math:`\\mathbf{S}` to a block."""
    matvecs: int
    """Applications of :math:`\\mathbf{S}` to single vectors (block products x columns)."""
    stop_reason: str = ""
    """What ended the solve (:data:`STOP_REASONS`)."""
    subspace_change: float = math.nan
    r""":math:`\lVert \mathbf{P}_t - \mathbf{P}_{t-1}\rVert_2` of the last step (nan if never
    measured), :func:`projector_change`."""
    subspace_bound: float = math.nan
    r"""The last Davis-Kahan estimate :math:`\lVert\mathbf{R}\rVert_F / (\theta_m -
    \theta_{m+1})` (nan if never measured), :func:`davis_kahan_bound`."""
    subspace_change_rms: float = math.nan
    r"""The last root-mean-square sine of the principal angles between successive wanted bases,
    :math:`\lVert\mathbf{P}_t - \mathbf{P}_{t-1}\rVert_F / \sqrt{2m}` (nan if never measured),
    :func:`subspace_changes`."""
    subspace_bound_rms: float = math.nan
    r"""The last Davis-Kahan estimate per wanted vector, ``subspace_bound`` :math:`/\sqrt{m}`."""
    history: list = field(default_factory=list)
    """One dict per subspace check (``matvecs``, ``iteration``, ``change``, ``change_rms``,
    ``bound``, ``bound_rms``): how the estimates fell, for benchmarks."""


STOP_REASONS: tuple[str, ...] = ("residual", "projector", "davis-kahan", "projector-rms",
                                 "davis-kahan-rms", "max_matvecs", "maxiter", "rank")
"""``residual``: every wanted pair within ``tol``; ``projector`` / ``davis-kahan``: the
subspace criterion of ``subspace_tol`` on the largest principal angle, ``projector-rms`` /
``davis-kahan-rms`` the same on the root-mean-square angle (:func:`chebyshev_subspace`);
``max_matvecs``: the product
ceiling; ``maxiter``: the outer-step ceiling; ``rank``: LOBPCG's search space collapsed."""
SUBSPACE_CRITERIA: tuple[str, ...] = ("projector", "davis-kahan", "either", "rms")


def _finish(space: BlockSpace, x: Block, theta: np.ndarray, counter: _Counter, iterations: int,
            stop_reason: str = "") -> BlockResult:
    """Sort by theta, recompute the residuals with a real product."""
    order = np.argsort(-theta, kind="stable")
    if not np.array_equal(order, np.arange(theta.size)):
        x = space.take(x, order)
        theta = theta[order]
    sx = space.matmul(x)
    counter.add(space.cols(x))
    res = residual_norms(space, x, sx, theta)
    return BlockResult(theta, x, res, iterations, counter.products, counter.matvecs, stop_reason)


def projector_change(space: BlockSpace, now: Sequence[Block], before: Sequence[Block]) -> float:
    r""":math:`\lVert \mathbf{V}_t\mathbf{V}_t^\top - \mathbf{V}_{t-1}\mathbf{V}_{t-1}^\top
    \rVert_2 = \sin\phi_{\max}`, the sine of the largest principal angle between two
    orthonormal :math:`(N, m)` bases (each given as a list of side-by-side blocks).

    From the singular values :math:`\sigma_i = \cos\phi_i` of the :math:`m \times m` matrix
    :math:`\mathbf{M} = \mathbf{V}_t^\top\mathbf{V}_{t-1}` (one Gram, no product):
    :math:`\sin\phi_{\max} = \sqrt{1 - \sigma_{\min}^2}`. In float32 blocks the floor is about
    :math:`\sqrt{\epsilon_{32}} \approx 3 \cdot 10^{-4}` (orthonormality to rounding).
    """
    return subspace_changes(space, now, before)[0]


def subspace_changes(space: BlockSpace, now: Sequence[Block], before: Sequence[Block]
                     ) -> tuple[float, float]:
    r"""``(max, rms)`` sines of the principal angles :math:`\phi_i` between two orthonormal
    :math:`(N, m)` bases: :math:`\sin\phi_{\max}` (:func:`projector_change`) and
    :math:`\sqrt{\tfrac1m\sum_i \sin^2\phi_i} = \lVert\mathbf{P}_t - \mathbf{P}_{t-1}
    \rVert_F / \sqrt{2m}`, from the singular values :math:`\sigma_i = \cos\phi_i` of
    :math:`\mathbf{M} = \mathbf{V}_t^\top\mathbf{V}_{t-1}` (:math:`m \times m`, one Gram).

    Why the mean: k-means sees the embedding rows, and the rows' total displacement is
    :math:`\lVert\sin\Theta\rVert_F` (up to a rotation), so the fraction of nodes that can
    change cluster scales with :math:`\tfrac1m\sum_i\sin^2\phi_i`, not with the single worst
    angle (which inside a near-degenerate cluster of eigenvalues may stay large long after the
    embedding has settled).
    """
    m = space.gram(list(now), list(before))
    if not m.size:
        return 0.0, 0.0
    sigma = np.minimum(np.linalg.svd(m, compute_uv=False), 1.0)
    sin2 = np.maximum(0.0, 1.0 - sigma ** 2)
    return math.sqrt(float(sin2.max())), math.sqrt(float(sin2.mean()))


def davis_kahan_bound(residuals: np.ndarray, theta_m: float, theta_next: float) -> float:
    r"""Davis-Kahan :math:`\sin\Theta` estimate of the distance between a Ritz subspace and the
    wanted invariant subspace: :math:`\lVert\mathbf{R}\rVert_F / \delta` with
    :math:`\mathbf{R} = \mathbf{S}\mathbf{V} - \mathbf{V}\Theta` (column norms
    ``residuals``, :math:`(m,)`) and the Ritz gap :math:`\delta = \theta_m - \theta_{m+1}`
    (the true gap to the unwanted spectrum is :math:`\theta_m - \lambda_{m+1}(\mathbf{S})
    \le \delta` by interlacing; the two agree once the block has settled). ``inf`` without a
    gap."""
    gap = theta_m - theta_next
    frob = float(np.sqrt(np.sum(np.square(residuals))))
    return frob / gap if gap > 0 else math.inf


# ----------------------------------------------------------------------------- Chebyshev

def _chebyshev_filter(space: BlockSpace, x: Block, sx: Block, degree: int, lower: float,
                      upper: float, scale_at: float, locked: Sequence[Block],
                      counter: _Counter) -> Block:
    r"""Scaled Chebyshev filter :math:`p_d(\mathbf{S})\mathbf{X}/p_d(\gamma)` damping
    :math:`[a, b]` = ``[lower, upper]`` (Zhou & Saad 2007, Alg. 3.2, mirrored for the upper end).

    With :math:`c = (a+b)/2`, :math:`e = (b-a)/2`, :math:`\sigma_1 = e/(\gamma - c)`:
    :math:`Z_1 = \tfrac{\sigma_1}{e}(\mathbf{S} - c)\mathbf{X}`,
    :math:`Z_{j+1} = \tfrac{2\sigma_{j+1}}{e}(\mathbf{S} - c)Z_j - \sigma_j\sigma_{j+1}Z_{j-1}`,
    :math:`\sigma_{j+1} = 1/(2/\sigma_1 - \sigma_j)`. ``sx`` = :math:`\mathbf{S}\mathbf{X}` is
    reused for the first step, so the filter costs ``degree - 1`` products. Every step is
    re-deflated (trivial and locked vectors), since the filter amplifies them most.
    """
    e = 0.5 * (upper - lower)
    c = 0.5 * (upper + lower)
    sigma1 = e / (scale_at - c)
    sigma = sigma1

    def clean(z: Block) -> Block:
        return project_out(space, space.deflate(z), locked, passes=1)

    z_prev, z = x, clean(space.combine([(sx, sigma1 / e), (x, -sigma1 * c / e)]))
    for _ in range(2, degree + 1):
        sigma_next = 1.0 / (2.0 / sigma1 - sigma)
        sz = space.matmul(z)
        counter.add(space.cols(z))
        z_next = space.combine([(sz, 2.0 * sigma_next / e), (z, -2.0 * sigma_next * c / e),
                                (z_prev, -sigma * sigma_next)])
        z_prev, z, sigma = z, clean(z_next), sigma_next
    return z


def _start(space: BlockSpace, b: int, seed: int, counter: "_Counter") -> tuple[Any, Any, Any]:
    """The seeded orthonormal starting block, its product (counted) and their Rayleigh-Ritz
    step, shared by both block solvers."""
    x = orthonormalize(space, space.random(b, seed), refill_seed=seed)
    sx = space.matmul(x)
    counter.add(space.cols(x))
    return rayleigh_ritz(space, x, sx)


def chebyshev_subspace(space: BlockSpace, m: int, *, block: int | None = None,
                       tol: float = 1e-5, degree: int = 10, maxiter: int = 500,
                       max_matvecs: int | None = None, seed: int = 0,
                       lower: float | None = None, max_amplification: float = 1e4,
                       lanczos_steps: int = 20, subspace_tol: float | None = None,
                       subspace_criterion: str = "either", first_degree: int | None = None,
                       progress: bool = False) -> BlockResult:
    r"""The ``m`` largest eigenpairs of the deflated :math:`\mathbf{S}` by Chebyshev-filtered
    subspace iteration with Rayleigh-Ritz and locking (module docstring).

    Stopping. The solve ends at the first of: every wanted residual :math:`\le` ``tol``
    (``residual``); the subspace criterion below (``projector`` / ``davis-kahan``); ``maxiter``
    outer steps; ``max_matvecs`` single-vector products (a ceiling). With ``subspace_tol`` set,
    after every Rayleigh-Ritz step on the wanted basis :math:`\mathbf{V}_t` (:math:`N \times m`:
    the locked vectors and the leading ``m - locked`` Ritz vectors):

    * ``projector``: :math:`\lVert\mathbf{P}_t - \mathbf{P}_{t-1}\rVert_2 \le` ``subspace_tol``,
      :math:`\mathbf{P}_t = \mathbf{V}_t\mathbf{V}_t^\top` (:func:`projector_change`, one
      :math:`m \times m` Gram);
    * ``davis-kahan``: :math:`\lVert\mathbf{S}\mathbf{V}_t - \mathbf{V}_t\Theta\rVert_F /
      (\theta_m - \theta_{m+1}) \le` ``subspace_tol`` (:func:`davis_kahan_bound`, no extra work:
      the residuals are computed anyway; needs ``block > m`` for :math:`\theta_{m+1}`).

    * ``rms``: the same two estimates per wanted vector, on the root-mean-square principal angle
      instead of the largest: :math:`\lVert\mathbf{R}\rVert_F / (\sqrt{m}\,(\theta_m -
      \theta_{m+1}))` (``davis-kahan-rms``) or :math:`\lVert\mathbf{P}_t - \mathbf{P}_{t-1}
      \rVert_F / \sqrt{2m}` (``projector-rms``, :func:`subspace_changes`). k-means moves a
      node when its embedding row moves, and the rows' total displacement is
      :math:`\lVert\sin\Theta\rVert_F`, so this is the clustering-relevant size; the
      largest angle is set by the single worst direction (the m-th vector against the
      (m+1)-th) and keeps the solve going long after the clusters have settled.

    The projector estimates are the step between successive bases divided by
    :math:`1 - 1/T_d(\hat\theta_m)` of the filter between them (:func:`_distance_from_step`):
    a weak filter (degree 1 near the ceiling, or a hard spectrum) barely moves the basis, and its
    raw step would look settled.

    All measure the subspace k-means sees, not the individual eigenvectors: inside a cluster
    of nearly equal eigenvalues the vectors may rotate freely while :math:`\mathbf{P}_t` has
    settled. Where the spectrum has no gap at :math:`m` neither fires and the ceiling stops the
    solve. With ``subspace_tol`` the first filter has half the largest degree (a settled
    subspace is then caught after few products) and the later ones are cut to what the current
    estimate :math:`\eta` needs: the smallest :math:`d` with :math:`T_d(\hat\theta_m) \ge 2\eta /`
    ``subspace_tol`` (the filter damps the error of the wanted subspace by about
    :math:`1/T_d(\hat\theta_m)`, :math:`\hat\theta_m` the m-th Ritz value mapped to the
    Chebyshev variable).

    Args:
        space (BlockSpace): operator and blocks.
        m (int): wanted pairs.
        block (int, optional): block width :math:`b \ge m` (default: ``m + max(8, m // 4)``).
            A wider block widens the gap :math:`\theta_m - \theta_{b+1}` that sets the rate.
        tol (float, optional): stop when all ``m`` residuals are :math:`\le` ``tol``
            (default: ``1e-5``).
        degree (int, optional): largest filter degree :math:`d` (products per outer step)
            (default: ``10``).
        maxiter (int, optional): outer steps at most (default: ``500``).
        max_matvecs (int, optional): stop once this many single-vector products are spent
            (a ceiling for the loose, k-means-grade solves) (default: no ceiling).
        seed (int, optional): seeds the starting block (default: ``0``).
        lower (float, optional): lower end :math:`a` of the damped interval (default: a Lanczos
            estimate, :func:`spectrum_lower_bound`; ``-1`` is always safe).
        max_amplification (float, optional): the degree is cut so that
            :math:`T_d(\hat\gamma) \le` this, which bounds the condition number of the filtered
            block for the orthonormalization (default: ``1e4``).
        lanczos_steps (int, optional): steps of the lower-bound estimate (default: ``20``).
        subspace_tol (float, optional): tolerance of the subspace criterion, in
            :math:`(0, 1)` (default: :obj:`None`, off).
        subspace_criterion (str, optional): ``projector``, ``davis-kahan``, ``either`` (the
            largest principal angle) or ``rms`` (the root-mean-square one) (default:
            ``either``).
        first_degree (int, optional): degree of the first filter with ``subspace_tol``
            (default: half of ``degree``, at least 2).
        progress (bool, optional): tqdm bar of single-vector products (default: :obj:`False`).

    Returns:
        BlockResult: ``theta`` descending, vectors, residuals (from the last Rayleigh-Ritz
        step's products: no extra product), counts, ``stop_reason``, the last
        ``subspace_change`` and ``subspace_bound``.
    """
    b = _check_block(space, m, block)
    check_subspace_options(subspace_tol, subspace_criterion)
    if first_degree is not None and first_degree < 1:
        raise ValueError(f"first_degree must be >= 1 (got {first_degree})")
    with tqdm(total=max_matvecs, desc="chebyshev", unit="matvec", disable=not progress,
              leave=False) as bar:
        counter = _Counter(bar)
        theta, x, sx = _start(space, b, seed, counter)
        if lower is None:
            lower = spectrum_lower_bound(space, lanczos_steps, seed, counter)
        locked: list[Block] = []
        locked_theta: list[np.ndarray] = []
        locked_res: list[np.ndarray] = []
        previous: list[Block] | None = None
        change = bound = change_rms = bound_rms = math.nan
        damping = 1.0  # T_d(theta_m mapped) of the last filter: 1 = no damping known
        history: list[dict[str, Any]] = []
        iterations = 0
        while True:
            need = m - sum(space.cols(q) for q in locked)
            res = residual_norms(space, x, sx, theta)
            done = res[:need] <= tol
            lead = int(np.argmin(done)) if not done.all() else need  # converged prefix
            if lead:  # one locked block (projections then need one Gram, not one per lock)
                locked = [concat(space, [*locked, space.take(x, np.arange(lead))])]
                locked_theta.append(theta[:lead])
                locked_res.append(res[:lead])
                rest = np.arange(lead, theta.size)
                x, sx, theta, res = space.take(x, rest), space.take(sx, rest), theta[rest], \
                    res[rest]
                need -= lead
            reason = "residual" if need == 0 else None
            if reason is None and subspace_tol is not None:
                bound = davis_kahan_bound(np.concatenate([*locked_res, res[:need]]),
                                          float(theta[need - 1]),
                                          float(theta[need]) if need < theta.size else math.inf)
                bound_rms = bound / math.sqrt(m)
                wanted = [*locked, space.take(x, np.arange(need))]
                step = step_rms = math.nan
                if subspace_criterion != "davis-kahan" and previous is not None:
                    step, step_rms = subspace_changes(space, wanted, previous)
                    change, change_rms = _distance_from_step(step, damping), \
                        _distance_from_step(step_rms, damping)
                previous = wanted
                history.append({"matvecs": counter.matvecs, "iteration": iterations,
                                "step": step, "step_rms": step_rms, "damping": damping,
                                "change": change, "change_rms": change_rms, "bound": bound,
                                "bound_rms": bound_rms})
                reason = _subspace_reason(subspace_criterion, subspace_tol, change, bound,
                                          change_rms, bound_rms)
            if reason is None and iterations >= maxiter:
                reason = "maxiter"
            if reason is None and max_matvecs is not None and counter.matvecs >= max_matvecs:
                reason = "max_matvecs"
            if reason is not None:
                break
            upper, top = float(theta[-1]), float(theta[0])
            a = lower if lower < upper else -1.0
            if top <= upper + 1e-12 * max(1.0, abs(upper)):
                top = upper + 1e-3 * (upper - a)
            g = (top - 0.5 * (upper + a)) / (0.5 * (upper - a))
            d = degree
            if g > 1.0:
                d = max(1, min(degree, int(math.acosh(max_amplification) / math.acosh(g))))
            if subspace_tol is not None:  # the random start's estimate means nothing: the
                # first filter is short (a settled subspace is caught after few products),
                # later ones what the estimate needs
                rms = subspace_criterion == "rms"
                d = min(d, (first_degree or max(2, degree // 2)) if iterations == 0 else
                        _needed_degree(float(theta[need - 1]), a, upper,
                                       bound_rms if rms else bound,
                                       change_rms if rms else change, subspace_tol))
            if max_matvecs is not None:  # do not overshoot the budget by a whole filter
                left = (max_matvecs - counter.matvecs) // max(space.cols(x), 1)
                d = max(1, min(d, left))
            damping = _damping(float(theta[need - 1]), a, upper, d)
            y = _chebyshev_filter(space, x, sx, d, a, upper, top, locked, counter)
            y = orthonormalize(space, y, against=locked, refill_seed=seed + 31 * iterations + 1)
            sy = space.matmul(y)
            counter.add(space.cols(y))
            theta, x, sx = rayleigh_ritz(space, y, sy)
            iterations += 1
        blocks = [*locked, space.take(x, np.arange(need))]
        thetas = np.concatenate([*locked_theta, theta[:need]])
        residuals = np.concatenate([*locked_res, res[:need]])
        vectors = concat(space, blocks)
        order = np.argsort(-thetas, kind="stable")
        if not np.array_equal(order, np.arange(thetas.size)):
            vectors, thetas, residuals = space.take(vectors, order), thetas[order], \
                residuals[order]
        return BlockResult(thetas, vectors, residuals, iterations, counter.products,
                           counter.matvecs, reason, change, bound, change_rms, bound_rms,
                           history)


def check_subspace_options(subspace_tol: float | None, criterion: str = "either") -> None:
    """One-line errors for the subspace stopping options of :func:`chebyshev_subspace`."""
    if subspace_tol is not None and not 0.0 < subspace_tol < 1.0:
        raise ValueError(f"subspace_tol must be in (0, 1) (got {subspace_tol})")
    if criterion not in SUBSPACE_CRITERIA:
        raise ValueError(f"unknown subspace_criterion {criterion!r}; known: "
                         f"{', '.join(SUBSPACE_CRITERIA)}")


def _subspace_reason(criterion: str, tol: float, change: float, bound: float,
                     change_rms: float = math.nan, bound_rms: float = math.nan) -> str | None:
    """The subspace criterion that holds (``None``: none; nan never holds)."""
    if criterion == "rms":
        if bound_rms <= tol:
            return "davis-kahan-rms"
        return "projector-rms" if change_rms <= tol else None
    if criterion != "projector" and bound <= tol:
        return "davis-kahan"
    if criterion != "davis-kahan" and change <= tol:
        return "projector"
    return None


def _damping(theta_m: float, lower: float, upper: float, degree: int) -> float:
    r""":math:`T_d(\hat\theta_m)`, :math:`\hat\theta_m = (\theta_m - c)/e` on
    :math:`[a, b]`: the factor by which a degree-:math:`d` filter shrinks the wanted subspace's
    error (1 when :math:`\theta_m` lies inside the damped interval: no shrinking known)."""
    g = (theta_m - 0.5 * (upper + lower)) / (0.5 * (upper - lower))
    return math.cosh(degree * math.acosh(g)) if g > 1.0 else 1.0


def _distance_from_step(step: float, damping: float) -> float:
    r"""The distance to the settled subspace implied by one filter step: a filter that shrinks
    the error :math:`\eta` to :math:`\eta/T` moves the basis by about :math:`\eta(1 - 1/T)`,
    so :math:`\eta \approx` ``step`` :math:`/(1 - 1/T)`.

    Why: the raw step size of a weak filter (degree 1 on a hard spectrum, :math:`T` near 1)
    is tiny however far the subspace still is, and stopping on it stopped the solve wrongly
    (seen on the generator's graph at 1/8 size: step 0.006 with the Davis-Kahan estimate at 4).
    ``inf`` when the filter is not known to shrink anything."""
    if math.isnan(step):
        return step
    return step / (1.0 - 1.0 / damping) if damping > 1.0 + 1e-12 else math.inf


def _needed_degree(theta_m: float, lower: float, upper: float, bound: float, change: float,
                   tol: float) -> int:
    r"""The smallest degree :math:`d` with :math:`T_d(\hat\theta_m) \ge 2\eta/\text{tol}`,
    :math:`\eta` the current error estimate (Davis-Kahan bound, else the projector change;
    no cut without either), :math:`\hat\theta_m = (\theta_m - c)/e` on :math:`[a, b]`."""
    eta = bound if math.isfinite(bound) else change
    g = (theta_m - 0.5 * (upper + lower)) / (0.5 * (upper - lower))
    if not math.isfinite(eta) or g <= 1.0:
        return 1 << 30
    return max(1, math.ceil(math.acosh(max(2.0 * eta / tol, 1.0)) / math.acosh(g)))


def _check_block(space: BlockSpace, m: int, block: int | None) -> int:
    free = space.num_rows - space.num_components
    if not 1 <= m < free:
        raise ValueError(f"need 1 <= m < N - c = {free} (got m = {m})")
    b = block if block is not None else m + max(8, m // 4)
    if b < m:
        raise ValueError(f"block ({b}) must be >= the number of wanted pairs ({m})")
    return min(b, free)


# ----------------------------------------------------------------------------- LOBPCG

def block_lobpcg(space: BlockSpace, m: int, *, block: int | None = None, tol: float = 1e-5,
                 maxiter: int = 500, max_matvecs: int | None = None, seed: int = 0,
                 progress: bool = False) -> BlockResult:
    r"""The ``m`` largest eigenpairs of the deflated :math:`\mathbf{S}` by LOBPCG.

    Every step: residuals :math:`R = \mathbf{S}X - X\Theta`; the *active* columns (residual
    above ``tol``; converged ones are soft-locked: they stay in :math:`X` but leave :math:`R`
    and :math:`P`) of :math:`R` are deflated, orthogonalized against :math:`X` and
    orthonormalized; :math:`P` (last update direction) is orthonormalized with its product
    :math:`\mathbf{S}P` carried along (no extra product); then Rayleigh-Ritz on
    :math:`Z = [X, R_a, P_a]` from the Gram matrices :math:`Z^\top Z`,
    :math:`Z^\top\mathbf{S}Z` (:math:`\le 3b \times 3b`), solved stably by SVQB of
    :math:`Z^\top Z`. One product of the active columns per step.

    Args: as :func:`chebyshev_subspace` (``block`` default ``m + max(5, ceil(0.2 m))``, as the
    scipy/torch backends).
    """
    b = _check_block(space, m, block if block is not None else m + max(5, math.ceil(0.2 * m)))
    rcond = _rcond(space)
    with tqdm(total=max_matvecs, desc="lobpcg", unit="matvec", disable=not progress,
              leave=False) as bar:
        counter = _Counter(bar)
        theta, x, sx = _start(space, b, seed, counter)
        p = sp_ = None
        iterations = 0
        reason = "maxiter"
        while iterations < maxiter:
            if max_matvecs is not None and counter.matvecs >= max_matvecs:
                reason = "max_matvecs"
                break
            r = space.combine([(sx, np.eye(theta.size)), (x, -np.diag(theta))])
            res = np.sqrt(np.maximum(space.sq_norms(r), 0.0))
            if (res[:m] <= tol).all():
                reason = "residual"
                break
            active = np.flatnonzero(res > tol)
            ra = project_out(space, space.deflate(space.take(r, active)), [x])
            t = svqb(space.gram([ra], [ra]), rcond)
            if t.shape[1] == 0:
                reason = "rank"
                break
            ra = space.combine([(ra, t)])
            sra = space.matmul(ra)
            counter.add(space.cols(ra))
            zs, szs = [x, ra], [sx, sra]
            if p is not None:
                pa, spa = space.take(p, active), space.take(sp_, active)
                t = svqb(space.gram([pa], [pa]), rcond)
                if t.shape[1]:
                    zs.append(space.combine([(pa, t)]))
                    szs.append(space.combine([(spa, t)]))
            g = space.gram(zs, zs)
            h = space.gram(zs, szs)
            w = svqb(g, rcond)
            hr = w.T @ (0.5 * (h + h.T)) @ w
            mu, q = np.linalg.eigh(0.5 * (hr + hr.T))
            order = np.argsort(-mu, kind="stable")[:b]
            coef = w @ q[:, order]
            sizes = [space.cols(z) for z in zs]
            parts = np.split(coef, np.cumsum(sizes)[:-1], axis=0)
            x_new = space.combine(list(zip(zs, parts)))
            sx_new = space.combine(list(zip(szs, parts)))
            p = space.combine(list(zip(zs[1:], parts[1:])))
            sp_ = space.combine(list(zip(szs[1:], parts[1:])))
            x, sx, theta = x_new, sx_new, mu[order]
            iterations += 1
        return _finish(space, space.take(x, np.arange(m)), theta[:m], counter, iterations,
                       reason)


# ----------------------------------------------------------------------------- assembly

def block_eigenpairs(space: BlockSpace, k: int, *, method: str = "chebyshev",
                     tol: float = 1e-5, maxiter: int = 500, seed: int = 0,
                     block: int | None = None, max_matvecs: int | None = None,
                     subspace_tol: float | None = None, progress: bool = False,
                     solver_name: str | None = None, **options: Any) -> Any:
    r"""The :math:`k` smallest eigenpairs of :math:`\mathbf{L} = \mathbf{I} - \mathbf{S}` on any
    :class:`BlockSpace`, as :class:`~distgcl.spectral.eigensolvers.Eigenpairs`.

    The :math:`c` trivial pairs come first (:math:`\lambda = 0`, vectors
    :meth:`BlockSpace.null_block`); the :math:`k - c` others from ``method``
    (``chebyshev`` | ``lobpcg``). The eigenvectors are gathered (float64, original node order,
    canonical signs: largest-magnitude entry positive) only at the end; residuals come from a
    final product in the space's working precision.

    Args:
        space (BlockSpace): operator and blocks.
        k (int): pairs wanted, :math:`1 \le k < N`.
        method (str, optional): ``chebyshev`` or ``lobpcg`` (default: ``chebyshev``).
        tol, maxiter, seed, block, max_matvecs, progress: passed to the solver.
        subspace_tol (float, optional): ``chebyshev`` only: stop on the subspace
            (:func:`chebyshev_subspace`) (default: :obj:`None`, off).
        solver_name (str, optional): the ``solver`` field of the result (default: ``method``).
        **options: solver-specific options (``degree``, ``lower``, ``max_amplification``,
            ``subspace_criterion``).

    The result's ``details`` hold ``stop_reason`` (:data:`STOP_REASONS`) and, with
    ``subspace_tol``, the last ``subspace_change`` and ``subspace_bound``.
    """
    from distgcl.spectral.eigensolvers import Eigenpairs

    if method not in METHODS:
        raise ValueError(f"unknown block method {method!r}; known: {', '.join(METHODS)}")
    if subspace_tol is not None:
        if method != "chebyshev":
            raise ValueError(f"subspace_tol needs method 'chebyshev' (got {method!r})")
        options["subspace_tol"] = subspace_tol
    n, c = space.num_rows, space.num_components
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N) = [1, {n}) (got {k})")
    start = time.perf_counter()
    trivial = space.null_block(min(c, k))
    if c >= k:
        result = None
        vals = np.zeros(k)
    else:
        solve = chebyshev_subspace if method == "chebyshev" else block_lobpcg
        result = solve(space, k - c, block=block, tol=tol, maxiter=maxiter,
                       max_matvecs=max_matvecs, seed=seed, progress=progress, **options)
        vals = np.concatenate([np.zeros(min(c, k)), 1.0 - result.theta])
    seconds = time.perf_counter() - start
    if space.cols(trivial):
        st = space.matmul(trivial)
        res_trivial = np.sqrt(np.maximum(space.sq_norms(space.combine([(st, 1.0),
                                                                       (trivial, -1.0)])), 0))
    else:
        res_trivial = np.zeros(0)
    vecs = np.empty((n, k), dtype=np.float64)  # gathered in place: one N x k array
    space.gather(trivial, vecs, 0)
    if result is not None:
        space.gather(result.vectors, vecs, space.cols(trivial))
    pivot = np.abs(vecs).argmax(axis=0)
    vecs *= np.where(vecs[pivot, np.arange(vecs.shape[1])] < 0, -1.0, 1.0)
    residuals = res_trivial if result is None else np.concatenate([res_trivial,
                                                                   result.residuals])
    out = Eigenpairs(vals, vecs, residuals, solver_name or method, tol, seconds,
                     0 if result is None else result.iterations, c,
                     matvecs=0 if result is None else result.matvecs,
                     details=stop_details(result))
    if not out.converged and max_matvecs is None and subspace_tol is None:
        warnings.warn(f"{out.solver}: residual {out.residual_max:.2e} above tol {tol:.1e} after "
                      f"{out.iterations} iterations (raise maxiter or block)", RuntimeWarning,
                      stacklevel=2)
    return out


def stop_details(result: BlockResult | None) -> dict[str, Any]:
    """``stop_reason`` and the last subspace measures of a block solve (``residual`` when no
    solve was needed), for :attr:`Eigenpairs.details <distgcl.spectral.eigensolvers.Eigenpairs>`."""
    if result is None:
        return {"stop_reason": "residual"}
    out: dict[str, Any] = {"stop_reason": result.stop_reason}
    for key in ("subspace_change", "subspace_bound", "subspace_change_rms",
                "subspace_bound_rms"):
        value = getattr(result, key)
        if not math.isnan(value):
            out[key] = float(f"{value:.3e}") if math.isfinite(value) else None
    return out
