"""Distribution wraps methods, never forks them: the only package that imports Ray.

* :mod:`distgcl.distributed.ddp`: DDP whose all-reduce sums the ranks' gradients;
* :mod:`distgcl.distributed.trainer`: Ray Train V2 — the worker runs :func:`distgcl.train.run_training`
  with a Ray-backed runtime; checkpoints reported through ``ray.train.report``; resume by run name.

Submodules are imported lazily (importing this package does not import Ray).
"""
