"""Distributed pieces of distgcl: the graph partitioner and graph-shard Ray actors.

Ray is imported only by the modules that need it (:mod:`distgcl.distributed.shards`,
:mod:`distgcl.distributed.linalg`, :mod:`distgcl.distributed.sampling`), never here, so that
importing :mod:`distgcl.distributed.partition` stays light.
"""
