"""Method registry. Each method module registers its class and its config section on import.

Importing this package imports every built-in method, so their config sections are known to
:mod:`distgcl.config` (which imports no method itself: the dependency points one way).
"""
from __future__ import annotations

from distgcl.config import register_section
from distgcl.methods.base import GraphInfo, Method, TrainingDiverged

METHODS: dict[str, type[Method]] = {}


def register_method(name: str, section_cls: type):  # type: ignore[no-untyped-def]
    """Class decorator: ``@register_method("grace", GraceConfig)``."""

    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        register_section(name, section_cls)
        return cls

    return wrap


def build_method(config, info: GraphInfo, work=None) -> Method:  # type: ignore[no-untyped-def]
    """Instantiate the method named by ``config.method`` for this rank's ``work``
    (:class:`~distgcl.work.Work`; default: one process)."""
    try:
        cls = METHODS[config.method]
    except KeyError:
        raise ValueError(f"unknown method {config.method!r}; known: {sorted(METHODS)}") from None
    return cls(config, info, work)


# Importing the modules registers them (keep one line per method).
from distgcl.methods import grace  # noqa: E402,F401
from distgcl.methods import nml  # noqa: E402,F401
from distgcl.methods import e2neg  # noqa: E402,F401

__all__ = ["METHODS", "Method", "GraphInfo", "TrainingDiverged", "register_method", "build_method"]
