r"""The :math:`k` smallest eigenpairs of the normalized Laplacian :math:`\mathbf{L}`.

Backends (``solver=``):

* ``"lobpcg-scipy"``: :func:`scipy.sparse.linalg.lobpcg` with ``largest=False``, the trivial
  eigenvectors given as constraints ``Y``, a padded block of :math:`k - c + \text{pad}` columns,
  an algebraic-multigrid preconditioner (pyamg smoothed aggregation built on
  :math:`\mathbf{L} + 10^{-5}\mathbf{I}`, as scikit-learn's
  ``spectral_embedding(eigen_solver="amg")``),
  a seeded Gaussian start, explicit absolute ``tol`` and ``maxiter``.
* ``"lobpcg-torch"``: :func:`torch.lobpcg` (``method="ortho"``, ``largest=False``) on a torch CSR
  :math:`\mathbf{L}`. ``torch.lobpcg`` has no constraints argument, so the trivial eigenvectors are
  deflated *equivalently* by putting them into the starting block: their residual is 0, so they
  count as converged (soft-locked) from the first step. No preconditioner.
* ``"eigsh"``: ARPACK :func:`scipy.sparse.linalg.eigsh` with ``which="LA"`` on the deflated
  operator :math:`2\mathbf{I} - \mathbf{L} - 2\mathbf{Y}\mathbf{Y}^\top` (the largest eigenvalues
  :math:`\mu` of :math:`2\mathbf{I} - \mathbf{L}` are :math:`2 - \lambda` for the smallest
  :math:`\lambda`; the deflation moves the trivial :math:`\mu = 2` to 0), seeded ``v0``.
* ``"chebyshev"``: Chebyshev-filtered subspace iteration on
  :math:`\mathbf{S} = \mathbf{I} - \mathbf{L}` (:func:`distgcl.spectral.block.chebyshev_subspace`),
  torch CSR with int32 indices applied 16 columns at a time; the trivial eigenvectors are
  deflated from every block. With a wide block and a loose ``tol`` or a ``max_matvecs`` budget
  it gives a k-means-grade invariant subspace after few products.
* ``"lobpcg-block"``: our LOBPCG on the same operator (:func:`distgcl.spectral.block.block_lobpcg`):
  the single-process twin of the sharded solver of :mod:`distgcl.distributed.linalg`.
* ``"dense"``: :func:`numpy.linalg.eigh` (small graphs only; also used automatically when
  :math:`N` is too small for a block method, see :func:`smallest_eigenpairs`).

In every backend the trivial eigenvectors :math:`\mathbf{Y}` (one
:math:`D^{1/2}\mathbf{1}_C` per connected component,
:func:`~distgcl.spectral.laplacian.trivial_eigenvectors`)
are returned first with eigenvalue 0, so a graph with :math:`c` components has exactly :math:`c`
zero eigenvalues; the iterative solve only looks for the :math:`k - c` non-trivial ones.

Every result reports the residuals :math:`r_j = \lVert \mathbf{L}x_j - \lambda_j x_j\rVert_2`
(unit :math:`x_j`), recomputed in float64 after the solve.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg
from tqdm.auto import tqdm

from distgcl.spectral.block import check_subspace_options
from distgcl.spectral.laplacian import (adjacency, connected_components,
                                        laplacian_from_adjacency, to_torch_csr,
                                        trivial_eigenvectors)
from distgcl.typing import EdgeIndex

Solver = Literal["lobpcg-scipy", "lobpcg-torch", "eigsh", "chebyshev", "lobpcg-block", "dense"]
SOLVERS: tuple[str, ...] = ("lobpcg-scipy", "lobpcg-torch", "eigsh", "chebyshev", "lobpcg-block",
                            "dense")


@dataclass
class Eigenpairs:
    """The result of :func:`smallest_eigenpairs`."""

    eigenvalues: np.ndarray
    """:math:`(k,)` ascending."""
    eigenvectors: np.ndarray
    """:math:`(N, k)` orthonormal columns, column :math:`j` pairs with ``eigenvalues[j]``."""
    residuals: np.ndarray
    r""":math:`(k,)`, :math:`\lVert \mathbf{L}x_j - \lambda_j x_j\rVert_2`."""
    solver: str
    """Backend that produced the pairs (``"dense"`` when the small-graph fallback was taken)."""
    tol: float
    """Requested absolute residual tolerance."""
    seconds: float
    """Wall time of the solve (excluding the residual check)."""
    iterations: int
    """Block iterations (LOBPCG) or operator applications (eigsh)."""
    num_components: int
    """Connected components :math:`c` (= number of exact zero eigenvalues returned)."""
    matvecs: int = 0
    """Single-vector operator products (block products x columns; block backends only)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Backend-specific figures (a sharded solve: partition and actor costs), in :meth:`summary`."""

    @property
    def residual_max(self) -> float:
        return float(self.residuals.max()) if self.residuals.size else 0.0

    @property
    def converged(self) -> bool:
        """All residuals within the requested ``tol`` (with the factor 2 = :math:`\\lVert L\\rVert`
        bound that relative criteria such as ARPACK's and torch's imply)."""
        return self.residual_max <= 2.0 * self.tol

    def summary(self) -> dict[str, Any]:
        return {"solver": self.solver, "k": int(self.eigenvalues.size), "tol": self.tol,
                "seconds": round(self.seconds, 3), "iterations": self.iterations,
                "matvecs": self.matvecs,
                "residual_max": self.residual_max, "num_components": self.num_components,
                "eigenvalue_min": float(self.eigenvalues.min()),
                "eigenvalue_max": float(self.eigenvalues.max()), **self.details}


def residual_norms(lap: sp.spmatrix, eigenvalues: np.ndarray, eigenvectors: np.ndarray
                   ) -> np.ndarray:
    r"""Column norms of :math:`\mathbf{L}\mathbf{X} - \mathbf{X}\operatorname{diag}(\lambda)` for
    unit-normalized columns of :math:`\mathbf{X}`, computed in float64.

    Shapes:
        - **input:** ``lap`` :math:`(N, N)`, ``eigenvalues`` :math:`(k,)`,
          ``eigenvectors`` :math:`(N, k)`
        - **output:** :math:`(k,)`
    """
    x = np.asarray(eigenvectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-300)
    r = lap.astype(np.float64) @ x - x * np.asarray(eigenvalues, dtype=np.float64)[None, :]
    return np.linalg.norm(r, axis=0)


class _CountingOperator(LinearOperator):
    """:math:`\\mathbf{A}` (optionally :math:`c\\mathbf{I} - \\mathbf{A} - \\text{deflation}`) as a
    LinearOperator that advances a progress bar on every product."""

    def __init__(self, matrix: sp.spmatrix, bar: tqdm, shift: float | None = None,
                 deflate: np.ndarray | None = None, deflate_value: float = 0.0) -> None:
        super().__init__(dtype=matrix.dtype, shape=matrix.shape)
        self.matrix, self.bar, self.shift = matrix, bar, shift
        self.deflate, self.deflate_value = deflate, deflate_value
        self.products = 0

    def _apply(self, x: np.ndarray) -> np.ndarray:
        self.products += 1
        self.bar.update(1)
        y = self.matrix @ x
        if self.shift is not None:
            y = self.shift * x - y
        if self.deflate is not None and self.deflate.shape[1]:
            y = y - self.deflate_value * (self.deflate @ (self.deflate.T @ x))
        return y

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x.reshape(-1, 1)).ravel()

    def _matmat(self, x: np.ndarray) -> np.ndarray:
        return self._apply(x)


def amg_preconditioner(lap: sp.spmatrix, shift: float = 1e-5, seed: int = 0) -> LinearOperator:
    r"""pyamg smoothed-aggregation V-cycle for :math:`\mathbf{L} + \text{shift}\cdot\mathbf{I}`
    (the shift makes the singular :math:`\mathbf{L}` definite, as scikit-learn does).

    pyamg draws random vectors from numpy's *global* generator (spectral-radius estimates of
    the smoother); it is seeded with ``seed`` for the build and restored afterwards.

    Returns:
        LinearOperator: :math:`\mathbf{M} \approx (\mathbf{L} + \text{shift}\,\mathbf{I})^{-1}`.
    """
    import pyamg  # lazy: optional at import time

    shifted = sp.csr_matrix(lap, dtype=np.float64) + shift * sp.identity(lap.shape[0],
                                                                         format="csr")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return pyamg.smoothed_aggregation_solver(sp.csr_matrix(shifted)).aspreconditioner()
    finally:
        np.random.set_state(state)


def _dense(lap: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh(lap.toarray().astype(np.float64))
    return vals[:k], vecs[:, :k]


def _fill_null_space(vals: np.ndarray, vecs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Replace the computed null space (the first ``c`` pairs) by the exact basis ``y``."""
    c = y.shape[1]
    if c == 0:
        return vals, vecs
    rest = vecs[:, c:] - y @ (y.T @ vecs[:, c:])  # re-orthogonalize against Y
    rest /= np.maximum(np.linalg.norm(rest, axis=0, keepdims=True), 1e-300)
    return np.concatenate([np.zeros(c), vals[c:]]), np.concatenate([y, rest], axis=1)


def block_width(solver: str, m: int, pad: int | None = None) -> int:
    """Columns of the iterated block for ``m`` wanted non-trivial pairs: ``m + pad``, by default
    ``pad = max(8, m // 4)`` for ``chebyshev`` and ``max(5, ceil(0.2 m))`` for the LOBPCG
    backends."""
    default = max(8, m // 4) if solver == "chebyshev" else max(5, math.ceil(0.2 * m))
    return m + (pad if pad is not None else default)


def smallest_eigenpairs(lap: sp.spmatrix, k: int, *, null_space: np.ndarray | None = None,
                        solver: str = "lobpcg-scipy", tol: float = 1e-5, maxiter: int = 500,
                        seed: int = 0, pad: int | None = None, preconditioner: bool = True,
                        progress: bool = False, dtype: np.dtype | type = np.float64,
                        max_matvecs: int | None = None, degree: int = 10,
                        subspace_tol: float | None = None,
                        subspace_criterion: str = "either") -> Eigenpairs:
    r"""The :math:`k` smallest eigenpairs of a symmetric normalized Laplacian.

    .. math::
        \mathbf{L}x_j = \lambda_j x_j,\quad 0 = \lambda_1 = \dots = \lambda_c < \lambda_{c+1}
        \le \dots \le \lambda_k,\quad \lVert \mathbf{L}x_j - \lambda_j x_j \rVert \le \mathrm{tol}

    Args:
        lap (scipy.sparse matrix): :math:`\mathbf{L}` :math:`(N, N)`, e.g. from
            :func:`~distgcl.spectral.laplacian.normalized_laplacian`.
        k (int): number of eigenpairs, :math:`1 \le k < N`.
        null_space (ndarray, optional): orthonormal null basis :math:`\mathbf{Y}` :math:`(N, c)`
            from :func:`~distgcl.spectral.laplacian.trivial_eigenvectors`; returned first with
            eigenvalue 0 and deflated from the iterative solve (default: :obj:`None`, no
            deflation: only right for graphs without any zero eigenvalue, so pass it).
        solver (str, optional): ``lobpcg-scipy | lobpcg-torch | eigsh | chebyshev |
            lobpcg-block | dense`` (module docstring) (default: ``lobpcg-scipy``).
        tol (float, optional): absolute residual tolerance. scipy ``lobpcg(tol=tol)`` is absolute;
            ``torch.lobpcg`` gets ``tol / 4`` (its criterion is relative to
            :math:`\lVert L\rVert + |\lambda| \le 4`); ``eigsh`` gets ``tol / 2`` (ARPACK's is
            relative to :math:`|\mu| \le 2`); the block backends take it as it is
            (default: ``1e-5``).
        maxiter (int, optional): LOBPCG iterations (``maxiter`` / ``niter``); for ``eigsh``,
            ARPACK restarts are capped at ``max(maxiter, 10 N)``; ``chebyshev``: outer
            (Rayleigh-Ritz) steps (default: ``500``).
        seed (int, optional): seeds the Gaussian starting block (numpy ``default_rng(seed)`` for
            scipy and ``eigsh``'s ``v0``, a ``torch.Generator`` for torch) (default: ``0``).
        pad (int, optional): extra block columns beyond the :math:`k - c` wanted (LOBPCG
            only); a wider block widens the gap :math:`\lambda_{k+1+\text{pad}} / \lambda_k`
            that sets the convergence rate (default: ``max(5, ceil(0.2 (k - c)))``;
            ``chebyshev``: ``max(8, (k - c) // 4)``).
        preconditioner (bool, optional): use the pyamg preconditioner (``lobpcg-scipy`` only)
            (default: :obj:`True`).
        progress (bool, optional): show a tqdm bar of operator products (default: :obj:`False`).
        dtype (numpy dtype, optional): working precision of the iterative solve; residuals are
            always recomputed in float64 (default: ``float64``).
        max_matvecs (int, optional): block backends: stop after this many single-vector
            products (a budget for k-means-grade solves; the result may then miss ``tol``)
            (default: no budget).
        degree (int, optional): ``chebyshev``: largest filter degree (default: ``10``).
        subspace_tol (float, optional): ``chebyshev``: stop once the k-dimensional subspace
            has settled (projector change between steps or Davis-Kahan bound
            :math:`\le` this, :func:`~distgcl.spectral.block.chebyshev_subspace`);
            ``max_matvecs`` stays the ceiling. ``details["stop_reason"]`` says which criterion
            ended a block solve (default: :obj:`None`, off).
        subspace_criterion (str, optional): ``chebyshev``: what ``subspace_tol`` bounds:
            ``either`` / ``projector`` / ``davis-kahan`` the largest principal angle, ``rms``
            the root-mean-square one (what k-means on the embedding sees)
            (default: ``either``).

    Returns:
        Eigenpairs: eigenvalues :math:`(k,)`, eigenvectors :math:`(N, k)` with canonical signs
        (largest-magnitude entry positive), residuals :math:`(k,)`.

    Block methods need :math:`N` well above the block: scipy's LOBPCG needs
    :math:`N - c \ge 5 \cdot \text{block}`, ``torch.lobpcg`` needs
    :math:`N \ge 3 \cdot \text{block}`;
    below that the dense solver is used and ``solver="dense"`` is reported.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}")
    n = lap.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N) = [1, {n}) (got {k})")
    if tol <= 0:
        raise ValueError(f"tol must be > 0 (got {tol})")
    if subspace_tol is not None and solver != "chebyshev":
        raise ValueError(f"subspace_tol needs solver 'chebyshev' (got {solver!r})")
    check_subspace_options(subspace_tol, subspace_criterion)
    y = np.zeros((n, 0)) if null_space is None else np.asarray(null_space, dtype=np.float64)
    c = y.shape[1]
    lap = sp.csr_matrix(lap)
    start = time.perf_counter()
    iterations = matvecs = 0
    details: dict[str, Any] = {}
    used = solver
    if c >= k:  # the whole answer is null space: no solve at all
        vals, vecs = np.zeros(k), y[:, :k].copy()
    else:
        m = k - c
        block = block_width(solver, m, pad)
        small = (solver == "lobpcg-scipy" and n - c < 5 * block) or \
                (solver == "lobpcg-torch" and n < 3 * (c + block)) or \
                (solver in ("chebyshev", "lobpcg-block") and n - c < 3 * block) or \
                (solver == "eigsh" and n - c <= m + 1)
        if solver == "dense" or small:
            used = "dense"
            vals, vecs = _fill_null_space(*_dense(lap, k), y)
        elif solver == "lobpcg-scipy":
            vals, vecs, iterations = _lobpcg_scipy(lap, y, m, block, tol, maxiter, seed,
                                                   preconditioner, progress, dtype)
        elif solver == "lobpcg-torch":
            vals, vecs, iterations = _lobpcg_torch(lap, y, m, block, tol, maxiter, seed,
                                                   progress, dtype)
        elif solver in ("chebyshev", "lobpcg-block"):
            vals, vecs, iterations, matvecs, details = _block(
                lap, y, m, block, tol, maxiter, seed, progress, dtype, solver, max_matvecs,
                degree, subspace_tol, subspace_criterion)
        else:
            vals, vecs, iterations = _eigsh(lap, y, m, tol, maxiter, seed, progress, dtype)
    seconds = time.perf_counter() - start
    order = np.argsort(vals, kind="stable")
    vals, vecs = np.asarray(vals, dtype=np.float64)[order], np.asarray(vecs)[:, order]
    # Canonical signs: the largest-magnitude entry of every eigenvector is positive.
    pivot = np.abs(vecs).argmax(axis=0)
    vecs = vecs * np.where(vecs[pivot, np.arange(vecs.shape[1])] < 0, -1.0, 1.0)
    res = residual_norms(lap, vals, vecs)
    out = Eigenpairs(vals, vecs.astype(np.float64, copy=False), res, used, tol, seconds,
                     iterations, c, matvecs, details)
    if not out.converged and details.get("stop_reason") not in ("projector", "davis-kahan"):
        warnings.warn(f"{used}: residual {out.residual_max:.2e} above tol {tol:.1e} after "
                      f"{iterations} iterations (raise maxiter or pad)", RuntimeWarning,
                      stacklevel=2)
    return out


def _lobpcg_scipy(lap: sp.csr_matrix, y: np.ndarray, m: int, block: int, tol: float,
                  maxiter: int, seed: int, preconditioner: bool, progress: bool,
                  dtype: Any) -> tuple[np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((lap.shape[0], block)).astype(dtype)
    precond = amg_preconditioner(lap, seed=seed) if preconditioner else None
    with tqdm(total=maxiter, desc="lobpcg-scipy", disable=not progress, leave=False) as bar:
        op = _CountingOperator(lap.astype(dtype), bar)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Exited at iteration.*")
            warnings.filterwarnings("ignore", message=".*not reaching the requested.*")
            vals, vecs = lobpcg(op, x0, M=precond, Y=y.astype(dtype) if y.shape[1] else None,
                                tol=tol, maxiter=maxiter, largest=False)
    order = np.argsort(vals)[:m]
    vals = np.concatenate([np.zeros(y.shape[1]), vals[order]])
    vecs = np.concatenate([y, vecs[:, order].astype(np.float64)], axis=1)
    return vals, vecs, op.products


def _lobpcg_torch(lap: sp.csr_matrix, y: np.ndarray, m: int, block: int, tol: float,
                  maxiter: int, seed: int, progress: bool, dtype: Any
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    a = to_torch_csr(lap, tdtype)
    gen = torch.Generator().manual_seed(seed)
    c = y.shape[1]
    x0 = torch.cat([torch.from_numpy(y).to(tdtype),
                    torch.randn(lap.shape[0], block, generator=gen, dtype=tdtype)], dim=1)
    steps = [0]
    with tqdm(total=maxiter, desc="lobpcg-torch", disable=not progress, leave=False) as bar:
        def tracker(worker: Any) -> None:
            steps[0] += 1
            bar.update(1)

        vals, vecs = torch.lobpcg(a, k=c + m, X=x0, n=c + block, niter=maxiter, tol=tol / 4,
                                  largest=False, method="ortho", tracker=tracker)
    vals_np, vecs_np = vals.double().numpy(), vecs.double().numpy()
    order = np.argsort(vals_np)
    vals_np, vecs_np = vals_np[order], vecs_np[:, order]
    return (*_fill_null_space(vals_np, vecs_np, y), steps[0])


def _block(lap: sp.csr_matrix, y: np.ndarray, m: int, block: int, tol: float, maxiter: int,
           seed: int, progress: bool, dtype: Any, solver: str, max_matvecs: int | None,
           degree: int, subspace_tol: float | None = None, subspace_criterion: str = "either"
           ) -> tuple[np.ndarray, np.ndarray, int, int, dict[str, Any]]:
    from distgcl.spectral.block import (LocalBlockSpace, block_lobpcg, chebyshev_subspace,
                                        stop_details)

    tdtype = torch.float64 if np.dtype(dtype) == np.float64 else torch.float32
    space = LocalBlockSpace.from_laplacian(lap, y, tdtype)
    if solver == "chebyshev":
        res = chebyshev_subspace(space, m, block=block, tol=tol, degree=degree, maxiter=maxiter,
                                 max_matvecs=max_matvecs, seed=seed, progress=progress,
                                 subspace_tol=subspace_tol,
                                 subspace_criterion=subspace_criterion)
    else:
        res = block_lobpcg(space, m, block=block, tol=tol, maxiter=maxiter,
                           max_matvecs=max_matvecs, seed=seed, progress=progress)
    vals = np.concatenate([np.zeros(y.shape[1]), 1.0 - res.theta])
    vecs = np.concatenate([y, space.gather(res.vectors)], axis=1)
    return vals, vecs, res.iterations, res.matvecs, stop_details(res)


def _eigsh(lap: sp.csr_matrix, y: np.ndarray, m: int, tol: float, maxiter: int, seed: int,
           progress: bool, dtype: Any) -> tuple[np.ndarray, np.ndarray, int]:
    n = lap.shape[0]
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(n)
    if y.shape[1]:
        v0 -= y @ (y.T @ v0)
    with tqdm(desc="eigsh", disable=not progress, leave=False) as bar:
        # 2I - L - 2 Y Y^T: mu = 2 - lambda; the trivial mu = 2 is deflated to 0.
        op = _CountingOperator(lap.astype(dtype), bar, shift=2.0, deflate=y.astype(dtype),
                               deflate_value=2.0)
        mu, vecs = eigsh(op, k=m, which="LA", tol=tol / 2, v0=v0.astype(dtype),
                         maxiter=max(maxiter, 10 * n))
    vals = 2.0 - mu.astype(np.float64)
    vals = np.concatenate([np.zeros(y.shape[1]), vals])
    vecs = np.concatenate([y, vecs.astype(np.float64)], axis=1)
    return vals, vecs, op.products


def laplacian_eigenpairs(edge_index: EdgeIndex, k: int, num_nodes: int | None = None,
                         **kwargs: Any) -> Eigenpairs:
    r"""Build :math:`\mathbf{L}` and its null basis from ``edge_index`` and call
    :func:`smallest_eigenpairs` (``kwargs`` are passed on: ``solver``, ``tol``, ``seed``, ...).

    Shapes:
        - **input:** ``edge_index`` :math:`(2, E)`
        - **output:** eigenvectors :math:`(N, k)`
    """
    adj = adjacency(edge_index, num_nodes)
    _, labels = connected_components(adj)
    y = trivial_eigenvectors(adj, labels)
    lap = laplacian_from_adjacency(adj)
    del adj
    return smallest_eigenpairs(lap, k, null_space=y, **kwargs)
