"""Graph stores: one interface (:class:`BaseGraphStore`, also PyG's ``FeatureStore`` /
``GraphStore``) over an in-process graph (:class:`LocalGraphStore`) or graph-shard actors
(:class:`ShardedGraphStore`). Importing this package does not import Ray."""
from distgcl.store.base import FEATURES, LABELS, BaseGraphStore, ReadOnlyStoreError, check_ids
from distgcl.store.local import LocalGraphStore
from distgcl.store.sharded import ShardedGraphStore

__all__ = ["BaseGraphStore", "FEATURES", "LABELS", "LocalGraphStore", "ReadOnlyStoreError",
           "ShardedGraphStore", "check_ids"]
