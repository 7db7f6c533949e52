r"""A graph with ogbn-proteins' shape, written in OGB's exact raw on-disk format.

ogbn-proteins cannot be downloaded here, so the scale experiments run the real loader
(``load_dataset("ogbn-proteins")``, i.e. ogb's ``PygNodePropPredDataset``) on files of the same
format and shape. At ``scale`` :math:`s`: :math:`N = \mathrm{round}(132{,}534\,s)` nodes and
:math:`M = \mathrm{round}(39{,}561{,}252\,s)` undirected edges, so the mean degree stays about 597.

The model (every draw seeded):

- **Species.** 8 species with the species split's sizes: six train species (86,619 nodes together at
  scale 1, in assumed shares 26/21/17/14/12/10 %), one valid (21,236) and one test species (24,679).
  Node ids are shuffled.
- **Families.** ``num_families`` functional families shared by all species (protein families
  across organisms), mixed per species as :math:`\pi_s \sim \mathrm{Dir}(2)`.
- **Edges.** Degree weights :math:`\theta_i \sim \mathrm{LogNormal}(0, \sigma)`. Each edge draws
  :math:`u \propto \theta`, then :math:`v \propto \theta` inside :math:`u`'s species and family
  (probability ``p_family``), inside its species (``p_species``) or anywhere (the rest). Self-loops
  and repeated pairs are redrawn, in rounds, until exactly :math:`M` distinct pairs exist; where the
  structured draw saturates (small dense scales, hubs of small families), the last rounds draw
  anywhere. Each edge is stored once (the loader adds the inverse), as OGB does.
- **Edge features**, 8 channels in [0, 1] with 3 decimals: channel :math:`c` of edge
  :math:`(u, v)` has the logit

  .. math::
      \ell_c = a_c + \kappa\,\tfrac{1}{2}(Q_{f_u c} + Q_{f_v c}) + \lambda\,[f_u = f_v]
               + \eta_{u c} + \eta_{v c},

  family profiles :math:`Q \sim N(0, 1)`, node offsets :math:`\eta \sim N(0, \tau^2)`. It is
  non-zero with probability :math:`\mathrm{sigmoid}(\ell_c)`, and then
  :math:`\mathrm{sigmoid}(\ell_c + \epsilon/2)` (at least 0.001). Summed or averaged over a node's
  edges the features reveal its family, blurred by its own offset :math:`\eta_u`, which averaging
  over neighbours removes: so a neighbourhood model can beat an MLP, as on the real graph.
- **Labels**, 112 binary tasks: score
  :math:`s_{it} = \alpha W_{f_i t} + \rho S_{s_i t} + \epsilon_{it}` (all standard normal); the top
  :math:`r_t N` nodes of task :math:`t` are positive, rates :math:`r_t` log-uniform in
  [0.01, 0.5]. Then every task gets both classes in every split (the best / worst scored node of a
  split is flipped where a split lacks a class).

Cost (bench/results/proteins_generate.json, one process each, 2 shared cores): scale 1 is written
in 94 s (89 s CPU) with a peak RSS of 1.1 GB (about 0.4 GB of it the interpreter and torch), 521 MB
on disk; ogb's first load of it takes 95 s and peaks at 7.1 GB, later loads 15 s and 4.3 GB. Scale
2: 192 s and 1.8 GB to write, 15.2 GB for ogb's first load, so scale 2 is about the largest a
24 GB machine loads (generation alone grows by about 0.7 GB per unit of scale). Memory: the
distinct pairs as int64 keys (8 bytes per edge) and one round of candidates; the writing pass works
in chunks. The dataset is built in a uniquely named temporary folder and renamed into place at the
end, so an interrupted run never leaves a complete-looking ``ogbn_proteins``. Scales below
:data:`MIN_SCALE` (about 0.009) are refused: the edges would fill more than half of all node pairs.
Below about 1/4 the planted families saturate (a family of a small species cannot hold its share
of 597 neighbours per node), so fewer edges stay inside a family (14 % at 1/16, 34 % at 1).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from distgcl.data.csv_gz import (GzipCsvWriter, format_binary_rows, format_int_rows,
                                 format_milli_rows, write_int_csv_gz)
from distgcl.data.registry import DatasetError

PROTEINS_NODES = 132_534
PROTEINS_UNDIRECTED_EDGES = 39_561_252
NUM_TASKS = 112
NUM_EDGE_FEATURES = 8
SPLIT_NODES = {"train": 86_619, "valid": 21_236, "test": 24_679}
TRAIN_SPECIES_SHARES = (0.26, 0.21, 0.17, 0.14, 0.12, 0.10)
# NCBI taxonomy ids of eight STRING model organisms; the last two are the valid and test species.
SPECIES_IDS = (3702, 4932, 6239, 7227, 7955, 511145, 10090, 9606)
# below it the edges would fill more than half of all node pairs
MIN_SCALE = 4 * PROTEINS_UNDIRECTED_EDGES / PROTEINS_NODES ** 2
GENERATOR = "distgcl.data.proteins"
GENERATOR_VERSION = 1
MANIFEST = "distgcl_generated.json"
DATASET_DIR = "ogbn_proteins"

# STRING's channels: homology, neighborhood, fusion, cooccurrence, coexpression, experimental,
# database, textmining. Base logits: text mining and co-expression common, fusion rare.
_CHANNEL_BASE = np.array([-1.5, -2.5, -3.5, -3.0, -0.5, -1.0, -2.0, 0.5], dtype=np.float32)
_STRUCTURED_ROUNDS = 6
_ANYWHERE_ROUNDS = 6


@dataclass(frozen=True)
class ProteinsModel:
    """Parameters of the generator (module docstring). The defaults were chosen at scale 1/4 so
    that the supervised references on ``sum+mean+species`` features land near their real
    ogbn-proteins figures (MLP 72.0, GraphSAGE 78.7 against 72.0 and 77.68); on the loader's
    default ``sum+mean`` they reach 76.6 and 82.6 (bench/results/proteins_reference.json)."""

    num_families: int = 16
    p_family: float = 0.35
    p_species: float = 0.60
    degree_sigma: float = 1.0
    feature_family: float = 1.5
    """:math:`\\kappa`"""
    feature_same_family: float = 1.0
    """:math:`\\lambda`"""
    feature_node_noise: float = 1.2
    """:math:`\\tau`"""
    label_family: float = 1.5
    """:math:`\\alpha`"""
    label_species: float = 0.3
    """:math:`\\rho`"""
    min_positive_rate: float = 0.01
    max_positive_rate: float = 0.5

    def __post_init__(self) -> None:
        if not (0 <= self.p_family and 0 <= self.p_species and self.p_family + self.p_species <= 1):
            raise ValueError("need p_family, p_species >= 0 and p_family + p_species <= 1")
        if not 0 < self.min_positive_rate <= self.max_positive_rate < 1:
            raise ValueError("need 0 < min_positive_rate <= max_positive_rate < 1")
        if self.num_families < 1:
            raise ValueError("num_families must be >= 1")


def proteins_size(scale: float) -> tuple[int, int]:
    """(nodes, undirected edges) of ogbn-proteins at ``scale``."""
    return int(round(PROTEINS_NODES * scale)), int(round(PROTEINS_UNDIRECTED_EDGES * scale))


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _species_sizes(num_nodes: int) -> np.ndarray:
    """Nodes per species: 6 train species, then valid, then test (largest remainder)."""
    total = sum(SPLIT_NODES.values())
    valid = int(round(num_nodes * SPLIT_NODES["valid"] / total))
    test = int(round(num_nodes * SPLIT_NODES["test"] / total))
    train = num_nodes - valid - test
    shares = np.array(TRAIN_SPECIES_SHARES) * train
    sizes = np.floor(shares).astype(np.int64)
    sizes[np.argsort(-(shares - sizes), kind="stable")[:train - int(sizes.sum())]] += 1
    return np.concatenate([sizes, [valid, test]])


@dataclass
class _Nodes:
    species: np.ndarray  # [N] species index 0..7
    family: np.ndarray   # [N] family index
    theta: np.ndarray    # [N] degree weight


def _draw_nodes(num_nodes: int, model: ProteinsModel, seed: int) -> _Nodes:
    rng = _rng(seed, 0)
    sizes = _species_sizes(num_nodes)
    species = np.repeat(np.arange(len(sizes)), sizes)[rng.permutation(num_nodes)]
    mix = rng.dirichlet(np.full(model.num_families, 2.0), size=len(sizes))
    family = np.empty(num_nodes, dtype=np.int64)
    for s in range(len(sizes)):
        members = np.flatnonzero(species == s)
        family[members] = rng.choice(model.num_families, size=members.size, p=mix[s])
    theta = rng.lognormal(0.0, model.degree_sigma, num_nodes)
    return _Nodes(species.astype(np.int64), family, theta)


class _PairSampler:
    """Draws node pairs by the edge model as int64 keys ``min * N + max`` (no self-loops; repeats
    possible)."""

    def __init__(self, nodes: _Nodes, model: ProteinsModel) -> None:
        self.n = nodes.theta.size
        self.model = model
        group = nodes.species * model.num_families + nodes.family
        self.order = np.argsort(group, kind="stable")
        cum = np.cumsum(nodes.theta[self.order])
        self.cum, self.total = cum, float(cum[-1])
        before = np.concatenate([[0.0], cum])  # mass before sorted position i
        sorted_group = group[self.order]
        sorted_species = nodes.species[self.order]
        num_groups = 8 * model.num_families
        g_lo = np.searchsorted(sorted_group, np.arange(num_groups), side="left")
        g_hi = np.searchsorted(sorted_group, np.arange(num_groups), side="right")
        s_lo = np.searchsorted(sorted_species, np.arange(8), side="left")
        s_hi = np.searchsorted(sorted_species, np.arange(8), side="right")
        self.group = group
        self.species = nodes.species
        # per mode: [first sorted position, one past last, mass before, mass inside]
        self.g_range = (g_lo, g_hi, before[g_lo], before[g_hi] - before[g_lo])
        self.s_range = (s_lo, s_hi, before[s_lo], before[s_hi] - before[s_lo])

    def _pick(self, lo: np.ndarray, hi: np.ndarray, mass_lo: np.ndarray, mass: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
        pos = np.searchsorted(self.cum, mass_lo + rng.random(lo.size) * mass, side="right")
        return self.order[np.clip(pos, lo, hi - 1)]  # the clip guards float round-off only

    def draw(self, count: int, mode: str, rng: np.random.Generator) -> np.ndarray:
        n = self.n
        if mode == "uniform":
            u, v = rng.integers(0, n, count), rng.integers(0, n, count)
        else:
            whole = (np.zeros(count, np.int64), np.full(count, n), np.zeros(count),
                     np.full(count, self.total))
            u = self._pick(*whole, rng)
            if mode == "structured":
                r = rng.random(count)
                fam = r < self.model.p_family
                spc = ~fam & (r < self.model.p_family + self.model.p_species)
                g, s = self.group[u], self.species[u]
                lo, hi, mlo, mass = (np.array(a, copy=True) for a in whole)
                for mask, idx, ranges in ((fam, g, self.g_range), (spc, s, self.s_range)):
                    for dst, src in zip((lo, hi, mlo, mass), ranges):
                        dst[mask] = src[idx[mask]]
                v = self._pick(lo, hi, mlo, mass, rng)
            else:  # "anywhere"
                v = self._pick(*whole, rng)
        keep = u != v
        u, v = u[keep], v[keep]
        return np.minimum(u, v) * n + np.maximum(u, v)


def _sorted_unique(buf: np.ndarray) -> np.ndarray:
    """Distinct values of ``buf``, sorted; sorts ``buf`` in place (np.unique would copy it)."""
    buf.sort()
    first = np.empty(buf.size, dtype=bool)
    first[:1] = True
    np.not_equal(buf[1:], buf[:-1], out=first[1:])
    return buf[first]


def _draw_edges(nodes: _Nodes, num_edges: int, model: ProteinsModel, seed: int,
                chunk: int, progress: bool) -> tuple[np.ndarray, list[dict]]:
    """Exactly ``num_edges`` distinct pairs as sorted keys, and a log of the rounds.

    Memory: the keys (8 bytes per edge) and one round of candidates (about as many again in the
    first round); the final merge holds the old and the new key array (2 x 8 bytes per edge).
    """
    sampler = _PairSampler(nodes, model)
    keys = np.empty(0, dtype=np.int64)
    rounds: list[dict] = []
    expected_yield = 0.9
    bar = tqdm(total=num_edges, desc="drawing edges", unit="edge", unit_scale=True,
               disable=not progress)
    mode, mode_rounds = "structured", 0
    for r in range(_STRUCTURED_ROUNDS + 2 * _ANYWHERE_ROUNDS):
        deficit = num_edges - keys.size
        if deficit == 0:
            break
        limit = _STRUCTURED_ROUNDS if mode == "structured" else _ANYWHERE_ROUNDS
        if mode_rounds >= limit or (mode != "uniform" and r > 0 and expected_yield < 0.05):
            mode = "anywhere" if mode == "structured" else "uniform"
            mode_rounds = 0
        wanted = min(int(deficit / max(expected_yield, 0.05) * 1.02) + 64, 2 * num_edges + 64)
        buf, filled = np.empty(wanted, dtype=np.int64), 0
        for i, start in enumerate(range(0, wanted, chunk)):
            part = sampler.draw(min(chunk, wanted - start), mode, _rng(seed, 1, r, i))
            buf[filled:filled + part.size] = part
            filled += part.size
        cand = _sorted_unique(buf[:filled])
        del buf
        if keys.size:
            at = np.searchsorted(keys, cand)
            cand = cand[keys[np.minimum(at, keys.size - 1)] != cand]
            del at
        expected_yield = max(cand.size / wanted, 1e-3)
        if cand.size > deficit:  # keep a seeded random subset (not the smallest keys), in order
            excess = cand.size - deficit
            pick = np.zeros(cand.size, dtype=bool) if excess > deficit else None
            rng = _rng(seed, 2, r)
            if pick is None:
                pick = np.ones(cand.size, dtype=bool)
                pick[rng.choice(cand.size, excess, replace=False)] = False
            else:
                pick[rng.choice(cand.size, deficit, replace=False)] = True
            cand = cand[pick]
            del pick
        merged = np.concatenate([keys, cand])
        del keys
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
        keys = merged
        rounds.append({"mode": mode, "drawn": wanted, "accepted": int(cand.size)})
        bar.update(cand.size)
        mode_rounds += 1
        del cand
    bar.close()
    if keys.size < num_edges:
        raise DatasetError(f"cannot place {num_edges} distinct edges on {nodes.theta.size} nodes "
                           f"(got {keys.size}); use fewer edges or more nodes")
    return keys, rounds


def _edge_features(u: np.ndarray, v: np.ndarray, nodes: _Nodes, profiles: np.ndarray,
                   offsets: np.ndarray, model: ProteinsModel,
                   rng: np.random.Generator) -> np.ndarray:
    """``[E, 8]`` features x 1000 as int16 (module docstring)."""
    fu, fv = nodes.family[u], nodes.family[v]
    logit = (_CHANNEL_BASE + np.float32(model.feature_family / 2) * (profiles[fu] + profiles[fv])
             + offsets[u] + offsets[v])
    logit += np.float32(model.feature_same_family) * (fu == fv)[:, None]
    active = rng.random(logit.shape, dtype=np.float32) < 1 / (1 + np.exp(-logit))
    logit += np.float32(0.5) * rng.standard_normal(logit.shape, dtype=np.float32)
    value = np.rint(1000 / (1 + np.exp(-logit)))
    return np.where(active, np.clip(value, 1, 1000), 0).astype(np.int16)


def _labels(nodes: _Nodes, split_of: np.ndarray, model: ProteinsModel, seed: int) -> np.ndarray:
    rng = _rng(seed, 3)
    n = nodes.theta.size
    family_effect = rng.standard_normal((model.num_families, NUM_TASKS)).astype(np.float32)
    species_effect = rng.standard_normal((8, NUM_TASKS)).astype(np.float32)
    score = (np.float32(model.label_family) * family_effect[nodes.family]
             + np.float32(model.label_species) * species_effect[nodes.species]
             + rng.standard_normal((n, NUM_TASKS), dtype=np.float32))
    rates = np.exp(rng.uniform(np.log(model.min_positive_rate), np.log(model.max_positive_rate),
                               NUM_TASKS))
    positives = np.maximum(1, np.rint(rates * n)).astype(np.int64)
    rank = np.argsort(np.argsort(-score, axis=0, kind="stable"), axis=0, kind="stable")
    labels = (rank < positives).astype(np.int8)
    for part in range(3):  # both classes in every split
        members = np.flatnonzero(split_of == part)
        sub, sub_score = labels[members], score[members]
        tasks = np.arange(NUM_TASKS)
        no_pos = sub.sum(0) == 0
        labels[members[sub_score.argmax(0)[no_pos]], tasks[no_pos]] = 1
        no_neg = sub.sum(0) == members.size
        labels[members[sub_score.argmin(0)[no_neg]], tasks[no_neg]] = 0
    return labels


def _manifest(scale: float, seed: int, num_nodes: int, num_edges: int,
              model: ProteinsModel) -> dict:
    return {"generator": GENERATOR, "version": GENERATOR_VERSION, "scale": scale, "seed": seed,
            "num_nodes": num_nodes, "num_edges": num_edges, "model": dataclasses.asdict(model)}


def _same_dataset(path: Path, expected: dict) -> bool:
    try:
        found = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return all(found.get(k) == v for k, v in expected.items())


def _remove_dead_temporaries(out: Path) -> None:
    """Remove temp folders left by killed runs (their pid is gone)."""
    for tmp in out.glob(f".{DATASET_DIR}.tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


def generate_proteins(out: str | Path, scale: float = 1.0, seed: int = 0, *,
                      num_nodes: int | None = None, num_edges: int | None = None,
                      model: ProteinsModel = ProteinsModel(), progress: bool = True,
                      chunk_edges: int = 1_000_000) -> Path:
    r"""Write ``<out>/ogbn_proteins`` with ogbn-proteins' shape at ``scale`` (module docstring).

    Args:
        out (str or Path): the data root; ``load_dataset("ogbn-proteins", root=out)`` loads it.
        scale (float, optional): fraction of ogbn-proteins' nodes and edges (default: ``1.0``).
        seed (int, optional): same seed, same files, byte for byte (default: ``0``).
        num_nodes (int, optional): override :math:`N` (tiny test graphs; default: from ``scale``).
        num_edges (int, optional): override the undirected edge count :math:`M`.
        model (ProteinsModel, optional): generator parameters.
        progress (bool, optional): show tqdm bars (default: ``True``).
        chunk_edges (int, optional): edges per drawing / writing chunk (default: 1 M; part of the
            seeded stream, so it changes the output).

    Returns:
        Path: the dataset folder. If it already exists with the same parameters it is kept as is.

    Raises:
        DatasetError: bad scale or sizes, or ``out/ogbn_proteins`` holds a different dataset.
    """
    if not scale > 0:
        raise DatasetError(f"scale must be > 0 (got {scale})")
    n_default, m_default = proteins_size(scale)
    n = int(num_nodes) if num_nodes is not None else n_default
    m = int(num_edges) if num_edges is not None else m_default
    if n < 64:
        raise DatasetError(f"need at least 64 nodes (scale {scale} gives {n})")
    if m < 1 or m > n * (n - 1) // 4:
        hint = (f"; mean degree 597 needs scale >= {MIN_SCALE:.3f}"
                if num_nodes is None and num_edges is None else "")
        raise DatasetError(f"{m} undirected edges on {n} nodes: need 1 <= edges <= "
                           f"{n * (n - 1) // 4} (half of all pairs){hint}")
    out = Path(out)
    final = out / DATASET_DIR
    expected = _manifest(float(scale), int(seed), n, m, model)
    if final.exists():
        if _same_dataset(final, expected):
            return final
        raise DatasetError(f"{final} already exists and is not this dataset (scale {scale}, "
                           f"seed {seed}); remove it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(out)
    tmp = out / f".{DATASET_DIR}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        stats = _write_dataset(tmp, n, m, int(seed), model, progress, chunk_edges)
        (tmp / MANIFEST).write_text(json.dumps({**expected, "stats": stats}, indent=2) + "\n")
        (tmp / "RELEASE_v1.txt").write_text("ogbn-proteins-shaped graph generated by distgcl\n")
        os.rename(tmp, final)  # atomic; refuses to replace a folder that appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_dataset(base: Path, n: int, m: int, seed: int, model: ProteinsModel,
                   progress: bool, chunk: int) -> dict:
    nodes = _draw_nodes(n, model, seed)
    split_of = np.select([nodes.species < 6, nodes.species == 6], [0, 1], 2)
    keys, rounds = _draw_edges(nodes, m, model, seed, chunk, progress)
    rng = _rng(seed, 4)
    profiles = rng.standard_normal((model.num_families, NUM_EDGE_FEATURES)).astype(np.float32)
    offsets = (model.feature_node_noise
               * rng.standard_normal((n, NUM_EDGE_FEATURES))).astype(np.float32)

    raw = base / "raw"
    degree = np.zeros(n, dtype=np.int64)
    same_family = same_species = 0
    bar = tqdm(total=m, desc="writing edges", unit="edge", unit_scale=True, disable=not progress)
    with GzipCsvWriter(raw / "edge.csv.gz") as edges_out, \
            GzipCsvWriter(raw / "edge-feat.csv.gz") as feats_out:
        for i, start in enumerate(range(0, m, chunk)):
            k = keys[start:start + chunk]
            u, v = k // n, k % n
            edges_out.write(format_int_rows(np.stack([u, v], 1)))
            feats = _edge_features(u, v, nodes, profiles, offsets, model, _rng(seed, 5, i))
            feats_out.write(format_milli_rows(feats))
            degree += np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
            same_species += int((nodes.species[u] == nodes.species[v]).sum())
            same_family += int(((nodes.family[u] == nodes.family[v])
                                & (nodes.species[u] == nodes.species[v])).sum())
            bar.update(k.size)
    bar.close()
    del keys

    write_int_csv_gz(raw / "num-node-list.csv.gz", np.array([[n]]))
    write_int_csv_gz(raw / "num-edge-list.csv.gz", np.array([[m]]))
    with GzipCsvWriter(raw / "node-label.csv.gz") as labels_out:
        labels_out.write(format_binary_rows(_labels(nodes, split_of, model, seed)))
    write_int_csv_gz(raw / "node_species.csv.gz", np.asarray(SPECIES_IDS)[nodes.species])
    for part, name in enumerate(("train", "valid", "test")):
        write_int_csv_gz(base / "split" / "species" / f"{name}.csv.gz",
                         np.flatnonzero(split_of == part))
    return {"split_sizes": [int((split_of == p).sum()) for p in range(3)],
            "degree_mean": float(degree.mean()), "degree_median": float(np.median(degree)),
            "degree_p99": float(np.percentile(degree, 99)), "degree_max": int(degree.max()),
            "isolated_nodes": int((degree == 0).sum()),
            "edges_within_species": same_species / m, "edges_within_family": same_family / m,
            "draw_rounds": rounds}
