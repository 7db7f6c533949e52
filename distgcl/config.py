"""Typed, validated run configuration: YAML file + ``--set KEY=VALUE`` overrides.

A config has fixed sections (``data``, ``model``, ``augment``, ``train``, ``eval``, ``dist``) and one
section per method (``grace``, ``nml``, ``e2neg``, ...). Method sections are registered by the
method modules themselves (:func:`register_section`, called by
:func:`distgcl.methods.register_method`): this module imports no method and knows none by name,
so the import direction is one way (``distgcl.methods`` -> ``distgcl.config``). Whoever loads a
config that names a method imports the method modules first (``import distgcl.methods``, as the
CLI and the trainer do).

Types are checked by pydantic (strict: ``5`` is no bool, ``"5"`` no integer; an integer is a
valid float) on the plain dataclasses; ranges and cross-field rules by each section's
``validate(prefix)``. Every user mistake raises :class:`ConfigError` whose message is one line
naming the key, e.g. ``train.epochs must be >= 1 (got 0)``; the CLI prints it and exits with
code 2.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError


class ConfigError(ValueError):
    """A user-facing configuration problem; the message is a single line."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_probability(key: str, value: float) -> None:
    """Drop rates and masking probabilities live in [0, 1)."""
    _check(0.0 <= value < 1.0, f"{key} must be in [0, 1) (got {value})")


def check_positive(key: str, value: float) -> None:
    _check(value > 0, f"{key} must be > 0 (got {value})")


def check_at_least(key: str, value: float, minimum: float) -> None:
    _check(value >= minimum, f"{key} must be >= {minimum} (got {value})")


@dataclass(kw_only=True)
class CSBMConfig:
    """Contextual stochastic block model generator (see :mod:`distgcl.data.csbm`)."""

    num_nodes: int = 2000
    """Number of nodes."""
    num_classes: int = 4
    """Number of planted classes (blocks)."""
    homophily: float = 0.8
    """Fraction of edges whose endpoints share a class."""
    avg_degree: float = 10.0
    """Expected number of (undirected) neighbours per node."""
    num_features: int = 64
    """Feature dimension."""
    feature_signal: float = 1.0
    """Distance between class means in units of the per-feature noise std."""

    def validate(self, prefix: str) -> None:
        check_at_least(f"{prefix}.num_nodes", self.num_nodes, 10)
        check_at_least(f"{prefix}.num_classes", self.num_classes, 2)
        _check(0.0 <= self.homophily <= 1.0,
               f"{prefix}.homophily must be in [0, 1] (got {self.homophily})")
        check_positive(f"{prefix}.avg_degree", self.avg_degree)
        check_at_least(f"{prefix}.num_features", self.num_features, 1)
        _check(self.feature_signal >= 0,
               f"{prefix}.feature_signal must be >= 0 (got {self.feature_signal})")


@dataclass(kw_only=True)
class DataConfig:
    name: str = "csbm"
    """Dataset name; ``distgcl datasets`` lists them."""
    root: str | None = None
    """Data root with the raw files (may be read-only). Default: $DISTGCL_DATA, else ~/.cache/distgcl/data."""
    cache: str | None = None
    """Writable cache for processed files. Default: $DISTGCL_CACHE, else ~/.cache/distgcl."""
    path: str | None = None
    """For ``name: file``: a ``.pt`` file holding a PyG ``Data`` with x, edge_index (y and
    train/val/test masks optional: without y the run trains and skips label-based evaluation)."""
    download: bool = False
    """Let PyG/OGB download missing raw files (needs network)."""
    normalize_features: bool = False
    """Row-normalize node features (GRACE and E2Neg do; NML-GCL does not)."""
    log_features: bool = False
    """Replace non-negative features by ``log(1 + x)`` (before any row normalization): for
    heavy-tailed counts and sums, e.g. ogbn-proteins' edge-feature sums, which grow with the
    degree (up to thousands); a per-value map, so new graphs embed without stored statistics."""
    standardize_features: bool = False
    """Zero mean and unit variance per feature column over the graph's nodes (after
    ``log_features``): non-negative features such as ogbn-proteins' share a large common
    component that makes every cosine similarity near 1. ``distgcl embed`` standardizes a new
    graph with its own statistics."""
    proteins_node_features: Literal["sum", "mean", "sum+mean", "sum+mean+species"] = "sum+mean"
    """ogbn-proteins has no node features: per node, the sum and/or the mean of its edges' 8-d
    features, optionally with the species one-hot (``distgcl.data.ogb.proteins_node_features``).
    Default ``sum+mean``: the sum is the literature's recipe, the mean its degree-free profile. The
    species one-hot is left out by default: under the species split the test species' column is
    never 1 in training, and it cost an MLP 2.5-4.6 ROC-AUC points on the generated graph
    (bench/results/proteins_reference.json)."""
    csbm: CSBMConfig = field(default_factory=CSBMConfig)

    def validate(self, prefix: str) -> None:
        self.csbm.validate(f"{prefix}.csbm")
        if self.name == "file":
            _check(self.path is not None, f"{prefix}.path is required when {prefix}.name is 'file'")


@dataclass(kw_only=True)
class ModelConfig:
    """GCN encoder (+ optional projection head)."""

    out_dim: int = 128
    """Embedding width (last GCN layer)."""
    hidden_dim: int | None = None
    """Width of the inner GCN layers; default ``2 * out_dim`` as in GRACE."""
    layers: int = 2
    """Number of GCNConv layers."""
    activation: Literal["relu", "prelu", "prelu-shared", "rrelu", "elu", "identity"] = "relu"
    """``prelu``: one PReLU slope per channel and layer (E2Neg's ``PReLU(output)``);
    ``prelu-shared``: one slope for the whole encoder (GRACE's ``nn.PReLU()`` module, reused by
    every layer)."""
    activate_last: bool = True
    """Apply the activation after the last layer too (GRACE does, NML-GCL does not)."""
    proj_dim: int = 128
    """Hidden width of the 2-layer projection head; 0 disables the head."""

    def validate(self, prefix: str) -> None:
        check_at_least(f"{prefix}.out_dim", self.out_dim, 1)
        if self.hidden_dim is not None:
            check_at_least(f"{prefix}.hidden_dim", self.hidden_dim, 1)
        check_at_least(f"{prefix}.layers", self.layers, 1)
        check_at_least(f"{prefix}.proj_dim", self.proj_dim, 0)


@dataclass(kw_only=True)
class AugmentConfig:
    """Two-view augmentation: edge dropping and feature-column masking per view."""

    edge_drop_1: float = 0.2
    edge_drop_2: float = 0.4
    feature_mask_1: float = 0.3
    feature_mask_2: float = 0.4

    def validate(self, prefix: str) -> None:
        for name in ("edge_drop_1", "edge_drop_2", "feature_mask_1", "feature_mask_2"):
            check_probability(f"{prefix}.{name}", getattr(self, name))


@dataclass(kw_only=True)
class TrainConfig:
    epochs: int = 200
    lr: float = 5e-4
    weight_decay: float = 1e-5
    seed: int = 0
    """Seeds everything: init, augmentations, samplers, splits of random-split datasets, probe."""
    device: str = "cpu"
    threads: int | None = None
    """torch intra-op threads; default: torch's own choice."""
    progress: bool = True
    """Show a progress bar."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N optimizer steps into ``<out>/checkpoints`` (0: never;
    full-batch methods take one step per epoch, so N steps = N epochs)."""
    resume: bool = True
    """Continue from the newest complete checkpoint in ``<out>/checkpoints`` if there is one."""
    prefetch: bool = True
    """Sample the next mini-batch on a background thread while the step runs this one
    (:mod:`distgcl.prefetch`; methods whose batches need a global random stream always sample
    inline). The numbers do not depend on it."""

    def validate(self, prefix: str) -> None:
        check_at_least(f"{prefix}.epochs", self.epochs, 1)
        check_positive(f"{prefix}.lr", self.lr)
        check_at_least(f"{prefix}.weight_decay", self.weight_decay, 0.0)
        check_at_least(f"{prefix}.checkpoint_every", self.checkpoint_every, 0)
        if self.threads is not None:
            check_at_least(f"{prefix}.threads", self.threads, 1)
        _check(isinstance(self.prefetch, bool),
               f"{prefix}.prefetch must be true or false (got {self.prefetch!r})")


@dataclass(kw_only=True)
class EvalConfig:
    """Linear probe + clustering on frozen embeddings.

    ``protocol`` picks a preset: the split rule, the probe and its settings, the embedding
    normalization (:mod:`distgcl.protocols`). Every ``probe_*`` / ``normalize`` left unset
    (``null``) takes the preset's value; one set here overrides it. The resolved settings go to
    ``result.json`` (``metrics.probe``).
    """

    protocol: Literal["default", "pygcl-10-80-10", "grace-random-10-90", "grace-public",
                      "nml-public"] = "default"
    """``default``: the dataset's split (public, or random 1:1:8 per seed), L-BFGS logistic
    regression with its C picked on validation, L2-normalized embeddings.
    ``pygcl-10-80-10``: E2Neg's evaluation (PyGCL ``get_split``: 10 % train, 80 % validation,
    10 % test per seed; PyGCL's Adam ``LREvaluator``, lr 0.01, 10000 epochs, check every 20;
    raw embeddings). ``grace-random-10-90``: GRACE's ``eval.py`` (random 10 % train / 90 % test,
    L2-normalized, one-vs-rest liblinear LR with C in 2^-10..2^9 by 5-fold CV).
    ``grace-public``: the same probe on the public split (the DGL GRACE example's
    ``--split public``, where GRACE's public-split figures come from).
    ``nml-public``: NML-GCL's ``eval.py`` (public split on Planetoid, else PyGCL ``get_split``;
    Adam LREvaluator, lr 0.001, 3000 epochs, check every 2; raw embeddings)."""
    probe: Literal["lbfgs", "adam", "liblinear-cv"] | None = None
    """``lbfgs``: scikit-learn multinomial logistic regression (L-BFGS), C from ``probe_c_grid``
    picked on validation (by cross-validation on train where the split has none); ``adam``: the
    batched Adam probe (all seeds one model; PyGCL's LREvaluator); ``liblinear-cv``: GRACE's
    one-vs-rest liblinear probe with C by cross-validation. Multi-label data always uses
    ``adam`` (112 tasks: the batched probe is the fast one)."""
    probe_seeds: int = 10
    """Probe repeats (init and, for random splits, the split)."""
    probe_epochs: int | None = None
    """Adam probe: epochs."""
    probe_lr: float | None = None
    """Adam probe: learning rate."""
    probe_weight_decay: float | None = None
    """Adam probe: weight decay."""
    probe_eval_every: int | None = None
    """Adam probe: validation check interval; the test score is read at the best check."""
    probe_c_grid: list[float] | None = None
    """L-BFGS / liblinear probes: inverse regularization strengths C to choose from."""
    probe_cv_folds: int | None = None
    """Cross-validation folds where C is chosen on the training nodes."""
    normalize: Literal["none", "l2", "standardize"] | None = None
    """Embedding normalization before the probe."""
    clustering: bool = True
    """k-means NMI/ARI/FMI for single-label datasets."""
    clustering_runs: int = 3
    save_embeddings: bool = True
    """Write the final node embeddings (float32 ``[N, d]``) to ``<out>/embeddings.pt``."""
    save_embeddings_npy: bool = False
    """Also write them as ``<out>/embeddings.npy`` (for numpy users)."""
    embed_batch_size: int = 65536
    """Rows per sparse product when computing the embeddings (run and ``distgcl embed``; 0: all
    rows at once). Bounds the temporaries, not the result; the numbers do not depend on it."""

    def validate(self, prefix: str) -> None:
        check_at_least(f"{prefix}.probe_seeds", self.probe_seeds, 1)
        for name in ("probe_epochs", "probe_eval_every", "probe_cv_folds"):
            if getattr(self, name) is not None:
                check_at_least(f"{prefix}.{name}", getattr(self, name),
                               2 if name == "probe_cv_folds" else 1)
        if self.probe_lr is not None:
            check_positive(f"{prefix}.probe_lr", self.probe_lr)
        if self.probe_weight_decay is not None:
            check_at_least(f"{prefix}.probe_weight_decay", self.probe_weight_decay, 0.0)
        if self.probe_c_grid is not None:
            _check(len(self.probe_c_grid) > 0 and all(c > 0 for c in self.probe_c_grid),
                   f"{prefix}.probe_c_grid must be a non-empty list of numbers > 0 "
                   f"(got {self.probe_c_grid})")
        check_at_least(f"{prefix}.clustering_runs", self.clustering_runs, 1)
        check_at_least(f"{prefix}.embed_batch_size", self.embed_batch_size, 0)


@dataclass(kw_only=True)
class DistConfig:
    """Distributed training through Ray Train (``distgcl train ... --num-workers N``)."""

    num_workers: int | None = None
    """Ray Train workers (data-parallel ranks); unset: the single-process loop."""
    use_gpu: bool = False
    """One GPU per worker (NCCL); otherwise CPU workers (gloo)."""
    cpus_per_worker: int | None = None
    """CPUs reserved per worker (default: ``train.threads`` or 1)."""
    storage_path: str | None = None
    """Where the run directory lives; must be shared (NFS, ...) on a multi-node cluster
    (default: ``$DISTGCL_STORAGE``, else ``./runs``)."""
    run_name: str | None = None
    """Run directory name under ``storage_path``; the same name resumes (default: from --out or
    the method, dataset and time)."""
    max_failures: int = 3
    """Worker failures Ray Train recovers from (all workers restart from the last checkpoint);
    -1: unlimited."""
    checkpoint_every: int | None = None
    """Checkpoint every N optimizer steps (default: ``train.checkpoint_every`` if set, else
    about 20 checkpoints over the run)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept (>= 2: the newest may be damaged)."""
    shards: int = 0
    """Graph-shard actors for the sharded steps (E2Neg's spectral step over ``P`` shards, with
    ``e2neg.solver`` ``chebyshev`` or ``lobpcg-block``); 0: every step in the worker. Needs
    ``num_workers`` (the actors are Ray's)."""
    address: str | None = None
    """Ray cluster to join (``auto``: the running one; default: ``$RAY_ADDRESS``, else a local
    Ray started on 127.0.0.1)."""
    startup_timeout_s: float = 300.0
    """Seconds a cluster may take to start the workers before the run fails with one line
    (a local Ray is checked at once: its resources are all there will be)."""
    shard_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each graph-shard actor of ``dist.shards`` requests, e.g.
    ``{shards: 1}`` to place the shards on the nodes started with ``--resources
    '{"shards": N}'`` (default: none, the actors go anywhere)."""
    worker_resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources each training worker requests besides its CPUs (and GPU), e.g.
    ``{trainers: 1}`` (default: none)."""

    def validate(self, prefix: str) -> None:
        if self.num_workers is not None:
            check_at_least(f"{prefix}.num_workers", self.num_workers, 1)
        if self.cpus_per_worker is not None:
            check_at_least(f"{prefix}.cpus_per_worker", self.cpus_per_worker, 1)
        _check(self.max_failures >= -1,
               f"{prefix}.max_failures must be >= -1 (got {self.max_failures})")
        if self.checkpoint_every is not None:
            check_at_least(f"{prefix}.checkpoint_every", self.checkpoint_every, 1)
        check_at_least(f"{prefix}.keep_checkpoints", self.keep_checkpoints, 2)
        check_at_least(f"{prefix}.shards", self.shards, 0)
        check_positive(f"{prefix}.startup_timeout_s", self.startup_timeout_s)
        for key in ("shard_resources", "worker_resources"):
            _check_custom_resources(f"{prefix}.{key}", getattr(self, key))
        if self.run_name is not None:
            _check(bool(self.run_name) and "/" not in self.run_name and self.run_name not in
                   (".", ".."), f"{prefix}.run_name must be a plain folder name "
                   f"(got {self.run_name!r})")


def _check_custom_resources(key: str, resources: dict[str, float]) -> None:
    """Custom Ray resources: names other than Ray's own (CPUs and GPUs have their own keys),
    amounts > 0."""
    for name, amount in resources.items():
        _check(name not in ("CPU", "GPU", "memory", "object_store_memory"),
               f"{key} names custom resources; {name!r} is Ray's own (use "
               f"dist.cpus_per_worker / dist.use_gpu)")
        check_positive(f"{key}.{name}", amount)


FIXED_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "dist": DistConfig,
}
METHOD_SECTIONS: dict[str, type] = {}
"""Method name -> its config section class; filled by :func:`register_section`."""


def register_section(name: str, section_cls: type) -> None:
    """Register method ``name`` and its config section (a dataclass; called by
    :func:`distgcl.methods.register_method` when a method module is imported)."""
    if name in FIXED_SECTIONS or name == "method":
        raise ValueError(f"section name {name!r} is reserved")
    if not dataclasses.is_dataclass(section_cls):
        raise TypeError(f"the config section of {name!r} must be a dataclass")
    METHOD_SECTIONS[name] = section_cls


def _known_methods() -> str:
    if not METHOD_SECTIONS:  # nobody imported a method module: say how to fix it
        return "none registered (import distgcl.methods before loading a config)"
    return ", ".join(sorted(METHOD_SECTIONS))


@dataclass(kw_only=True)
class Config:
    method: str = "grace"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    sections: dict[str, Any] = field(default_factory=dict)
    """Method sections by name (``grace``, ``nml``, ...), each a registered dataclass."""

    def section(self, name: str) -> Any:
        """The config section of method ``name`` (defaults if the YAML had none)."""
        if name not in self.sections:
            if name not in METHOD_SECTIONS:
                raise ConfigError(f"unknown method section {name!r}; known: {_known_methods()}")
            self.sections[name] = METHOD_SECTIONS[name]()
        return self.sections[name]

    def validate(self) -> None:
        _check(self.method in METHOD_SECTIONS,
               f"unknown method {self.method!r}; known: {_known_methods()}")
        for name in FIXED_SECTIONS:
            getattr(self, name).validate(name)
        self.section(self.method)
        for name, section in self.sections.items():
            if hasattr(section, "validate"):
                section.validate(name)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``result.json`` stores)."""
        out: dict[str, Any] = {"method": self.method}
        for name in FIXED_SECTIONS:
            out[name] = dataclasses.asdict(getattr(self, name))
        for name, section in sorted(self.sections.items()):
            out[name] = dataclasses.asdict(section)
        return out


# ----------------------------------------------------------------------------- parsing

def _forbid_unknown_keys(cls: type) -> None:
    """Make pydantic reject unknown keys in dataclass ``cls`` and the dataclasses it nests."""
    if "__pydantic_config__" not in cls.__dict__:
        cls.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    for hint in typing.get_type_hints(cls).values():
        for tp in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                _forbid_unknown_keys(tp)


@functools.cache
def _adapter(section_cls: type) -> TypeAdapter:
    _forbid_unknown_keys(section_cls)
    return TypeAdapter(section_cls)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false",
               "string": "a string", "list": "a list", "dataclass": "a mapping",
               "dict": "a mapping"}


def _error_message(prefix: str, section_cls: type, error: Any) -> str:
    """One line for one pydantic error, naming the dotted key."""
    loc = list(error["loc"])
    key = prefix
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
    kind, value = error["type"], error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        owner, where = section_cls, prefix
        for part in loc[:-1]:  # the nested section holding the unknown key
            owner = typing.get_type_hints(owner)[part]
            where += f".{part}"
        known = ", ".join(f.name for f in dataclasses.fields(owner))
        return f"unknown config key '{key}'; known keys in {where}: {known}"
    if kind == "literal_error":
        return f"{key} must be one of {error['ctx']['expected']} (got {value!r})"
    word = _TYPE_WORDS.get(kind.split("_")[0])
    if word is not None:
        return f"{key} must be {word} (got {value!r})"
    return f"{key}: {error['msg']} (got {value!r})"


def build_section(prefix: str, section_cls: type, values: dict[str, Any]) -> Any:
    """Instantiate a section dataclass from a mapping: types checked by pydantic in strict JSON
    mode (the semantics of YAML values), unknown keys rejected; one-line :class:`ConfigError`."""
    _check(isinstance(values, dict), f"{prefix} must be a mapping (got {values!r})")
    try:
        # JSON mode: strict types, yet a JSON object may fill a (nested) dataclass
        return _adapter(section_cls).validate_json(json.dumps(values, default=str), strict=True)
    except ValidationError as exc:
        raise ConfigError(_error_message(prefix, section_cls, exc.errors()[0])) from None


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; read it as the float a user means."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YAMLLoader)  # noqa: S506 (a SafeLoader subclass)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    _check(all(parts), f"bad --set key {dotted!r}")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        _check(isinstance(child, dict), f"cannot set {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.epochs=5'`` -> ``('train.epochs', 5)``; the value is parsed as YAML."""
    _check("=" in text, f"--set expects KEY=VALUE (got {text!r})")
    key, raw = text.split("=", 1)
    try:
        value = _yaml(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data (the method modules must be
    imported, e.g. ``import distgcl.methods``, so that their sections are registered)."""
    _check(isinstance(tree, dict), "config must be a mapping at the top level")
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in tree.items():
        if key == "method":
            _check(isinstance(value, str), f"method must be a string (got {value!r})")
            kwargs["method"] = value
        elif key in FIXED_SECTIONS:
            kwargs[key] = build_section(key, FIXED_SECTIONS[key], value)
        elif key in METHOD_SECTIONS:
            sections[key] = build_section(key, METHOD_SECTIONS[key], value)
        else:
            known = ", ".join(["method", *FIXED_SECTIONS, *sorted(METHOD_SECTIONS)])
            raise ConfigError(f"unknown config key '{key}'; known top-level keys: {known}"
                              + ("" if METHOD_SECTIONS else f" (methods: {_known_methods()})"))
    config = Config(**kwargs, sections=sections)
    config.validate()
    return config


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        _check(path.is_file(), f"config file not found: {path}")
        try:
            loaded = _yaml(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        tree = loaded or {}
        _check(isinstance(tree, dict), f"{path}: config must be a mapping at the top level")
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    return config_from_dict(tree)
