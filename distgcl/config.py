"""Typed, validated run configuration: YAML file + ``--set KEY=VALUE`` overrides.

A config has fixed sections (``data``, ``model``, ``augment``, ``train``, ``eval``, ``dist``) and one
section per method (``grace``, ``nml``, ``e2neg``, ...). Method sections are registered by the
method modules themselves (:func:`register_section`), so adding a method never edits this file.

Every user mistake raises :class:`ConfigError` whose message is one line naming the key, e.g.
``train.epochs must be >= 1 (got 0)``; the CLI prints it and exits with code 2.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


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
    proteins_node_features: Literal["mean", "sum"] = "mean"
    """ogbn-proteins has no node features: aggregate the 8-d edge features per node this way."""
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
    activation: Literal["relu", "prelu", "rrelu", "elu", "identity"] = "relu"
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

    def validate(self, prefix: str) -> None:
        check_at_least(f"{prefix}.epochs", self.epochs, 1)
        check_positive(f"{prefix}.lr", self.lr)
        check_at_least(f"{prefix}.weight_decay", self.weight_decay, 0.0)
        check_at_least(f"{prefix}.checkpoint_every", self.checkpoint_every, 0)
        if self.threads is not None:
            check_at_least(f"{prefix}.threads", self.threads, 1)


@dataclass(kw_only=True)
class EvalConfig:
    """Linear probe + clustering on frozen embeddings."""

    probe_seeds: int = 10
    """Independent probe runs (init and, for random-split datasets, the split)."""
    probe_epochs: int = 1000
    probe_lr: float = 0.01
    probe_weight_decay: float = 0.0
    probe_eval_every: int = 10
    """Validation check interval; the test score is read at the best validation check."""
    normalize: Literal["none", "l2", "standardize"] = "l2"
    """Embedding normalization before the probe (``l2``, as GRACE's own evaluation; on GRACE's
    Cora embeddings it gave 80.8 vs 77.6 for ``standardize``, see bench/results/grace.json)."""
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
        check_at_least(f"{prefix}.probe_epochs", self.probe_epochs, 1)
        check_positive(f"{prefix}.probe_lr", self.probe_lr)
        check_at_least(f"{prefix}.probe_weight_decay", self.probe_weight_decay, 0.0)
        check_at_least(f"{prefix}.probe_eval_every", self.probe_eval_every, 1)
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
    address: str | None = None
    """Ray cluster to join (``auto``: the running one; default: ``$RAY_ADDRESS``, else a local
    Ray started on 127.0.0.1)."""

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
        if self.run_name is not None:
            _check(bool(self.run_name) and "/" not in self.run_name and self.run_name not in
                   (".", ".."), f"{prefix}.run_name must be a plain folder name "
                   f"(got {self.run_name!r})")


FIXED_SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "dist": DistConfig,
}
METHOD_SECTIONS: dict[str, type] = {}


def register_section(name: str, section_cls: type) -> None:
    """Register a method's config section (called by each method module at import)."""
    if name in FIXED_SECTIONS or name == "method":
        raise ValueError(f"section name {name!r} is reserved")
    METHOD_SECTIONS[name] = section_cls


def _ensure_methods_registered() -> None:
    import distgcl.methods  # noqa: F401  (importing registers every method's section)


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
        _ensure_methods_registered()
        if name not in self.sections:
            if name not in METHOD_SECTIONS:
                raise ConfigError(f"unknown method section {name!r}; known: {sorted(METHOD_SECTIONS)}")
            self.sections[name] = METHOD_SECTIONS[name]()
        return self.sections[name]

    def validate(self) -> None:
        _ensure_methods_registered()
        from distgcl.methods import METHODS

        _check(self.method in METHODS,
               f"unknown method {self.method!r}; known: {', '.join(sorted(METHODS))}")
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

def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to annotation ``tp`` or raise ConfigError naming ``key``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        _check(value in choices, f"{key} must be {_type_name(tp)} (got {value!r})")
        return value
    if origin in (list, tuple):
        _check(isinstance(value, (list, tuple)), f"{key} must be a list (got {value!r})")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), f"{key} must be a mapping (got {value!r})")
        return build_section(key, tp, value)
    if tp is Any:
        return value
    if tp is bool:
        _check(isinstance(value, bool), f"{key} must be true or false (got {value!r})")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool),
               f"{key} must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool),
               f"{key} must be a number (got {value!r})")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), f"{key} must be a string (got {value!r})")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def build_section(prefix: str, section_cls: type, values: dict[str, Any]) -> Any:
    """Instantiate a section dataclass from a mapping, rejecting unknown keys."""
    hints = typing.get_type_hints(section_cls)
    known = [f.name for f in dataclasses.fields(section_cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}.{key}'; known keys in {prefix}: "
                              f"{', '.join(known)}")
        kwargs[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    return section_cls(**kwargs)


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
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data."""
    _ensure_methods_registered()
    _check(isinstance(tree, dict), "config must be a mapping at the top level")
    kwargs: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in tree.items():
        if key == "method":
            _check(isinstance(value, str), f"method must be a string (got {value!r})")
            kwargs["method"] = value
        elif key in FIXED_SECTIONS:
            _check(isinstance(value, dict), f"{key} must be a mapping (got {value!r})")
            kwargs[key] = build_section(key, FIXED_SECTIONS[key], value)
        elif key in METHOD_SECTIONS:
            _check(isinstance(value, dict), f"{key} must be a mapping (got {value!r})")
            sections[key] = build_section(key, METHOD_SECTIONS[key], value)
        else:
            known = ["method", *FIXED_SECTIONS, *sorted(METHOD_SECTIONS)]
            raise ConfigError(f"unknown config key '{key}'; known top-level keys: {', '.join(known)}")
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
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        tree = loaded or {}
        _check(isinstance(tree, dict), f"{path}: config must be a mapping at the top level")
    for text in overrides:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    return config_from_dict(tree)
