"""The spread over training seeds (``distgcl train CONFIG --seeds 0,1,2``).

One training run gives one embedding; its probe score over ``eval.probe_seeds`` probe seeds
varies only with the probe's split and init, and on a fixed (public) split with the
deterministic L-BFGS probe not at all. The spread that says how much a figure depends on the
training itself comes from one run per training seed: ``OUT/seed-S/`` each (a normal run with
its ``result.json``), summarized in ``OUT/seeds.json``:

- ``metric``: ``accuracy`` (or ``rocauc`` for multi-label data; ``null`` when the probe was
  skipped), ``mean`` and ``std`` over the finished training seeds (sample std, ``ddof=1``, as
  the probe's own std; ``null`` under two seeds), ``summary``: the same for NMI/ARI/FMI;
- ``per_seed``: each finished seed's score (the mean over its probe seeds), its probe std and
  per-probe-seed scores, clustering scores and its ``result.json``; ``failed``: seed -> message;
- ``probe``: the probe setting (protocol, split, probe, probe seeds, ...), the same for all.

``seeds.json`` is rewritten (atomically) after every seed, so a seed that fails loses none of
the finished ones; a rerun into the same folder skips the seeds whose ``result.json`` holds the
same resolved config.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

SUMMARY_FILE = "seeds.json"
CLUSTERING = ("nmi", "ari", "fmi")
# per-run measurements of the probe, not its setting
_PROBE_RUN_KEYS = ("seconds", "best_c")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``: at least two distinct non-negative integer training seeds;
    ``ValueError`` with a one-line message otherwise."""
    items = [t.strip() for t in text.split(",")]
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated training seeds like 0,1,2 "
                         f"(got {text!r})") from None
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds: training seeds must be >= 0 (got {text!r})")
    if len(set(seeds)) != len(seeds):
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"--seeds: seed {dup[0]} is given twice (got {text!r})")
    if len(seeds) < 2:
        raise ValueError(f"--seeds needs at least two training seeds for a spread, e.g. "
                         f"0,1,2 (got {text!r}; one run: --set train.seed=S)")
    return seeds


def seed_dir(base: Path, seed: int) -> Path:
    """Where training seed ``seed``'s run goes."""
    return base / f"seed-{seed}"


def finished_result(run_dir: Path, config: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """``(result, why)``: the run's ``result.json`` if it holds the resolved ``config``
    (compared as JSON, what the file stores), else ``None`` and why it is trained (again)."""
    path = run_dir / "result.json"
    if not path.exists():
        return None, "no result.json yet"
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None, f"{path} is unreadable: training it again"
    if result.get("config") != json.loads(json.dumps(config)):
        return None, f"{path} holds another config: training it again"
    return result, f"skipped: {path} already holds this config"


def metric_name(metrics: dict[str, Any]) -> str | None:
    """``accuracy`` or ``rocauc`` (multi-label data), ``None`` where the probe was skipped."""
    for name in ("accuracy", "rocauc"):
        if f"{name}_mean" in metrics:
            return name
    return None


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample std (``ddof=1``; ``None`` under two values) of ``values``."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


class SeedRuns:
    """The training seeds of one ``--seeds`` run and their summary file ``base/seeds.json``."""

    def __init__(self, base: Path, seeds: list[int]) -> None:
        self.base, self.seeds = base, seeds
        self.path = base / SUMMARY_FILE
        self.results: dict[int, dict[str, Any]] = {}
        self.failed: dict[int, str] = {}

    def add(self, seed: int, result: dict[str, Any]) -> None:
        """Record a finished seed and rewrite ``seeds.json``."""
        self.results[seed] = result
        self.failed.pop(seed, None)
        self.write()

    def fail(self, seed: int, message: str) -> None:
        """Record a seed that did not finish and rewrite ``seeds.json``."""
        self.failed[seed] = message
        self.write()

    def summary(self) -> dict[str, Any]:
        """What ``seeds.json`` holds (see the module docstring)."""
        done = [s for s in self.seeds if s in self.results]
        first = self.results[done[0]] if done else {}
        metric = metric_name(first.get("metrics", {}))
        per_seed = {str(s): self._per_seed(s, metric) for s in done}
        scores = [per_seed[str(s)]["score"] for s in done if metric is not None]
        summary = {name: _spread([per_seed[str(s)][name] for s in done
                                  if per_seed[str(s)].get(name) is not None])
                   for name in CLUSTERING}
        return {"method": first.get("method"), "dataset": first.get("dataset"),
                "metric": metric, **_spread(scores),
                "std_over": "training seeds (sample std, ddof=1)",
                "seeds": self.seeds, "finished": done,
                "failed": {str(s): m for s, m in self.failed.items()},
                "probe": self._probe_setting(first), "summary": summary,
                "per_seed": per_seed}

    def _per_seed(self, seed: int, metric: str | None) -> dict[str, Any]:
        m = self.results[seed]["metrics"]
        out: dict[str, Any] = {"result": str(seed_dir(self.base, seed) / "result.json")}
        if metric is not None:
            out.update(score=m[f"{metric}_mean"], probe_std=m[f"{metric}_std"],
                       probe_per_seed=m.get(f"{metric}_per_seed"))
        out.update({k: m[k] for k in CLUSTERING if k in m})
        return out

    @staticmethod
    def _probe_setting(result: dict[str, Any]) -> dict[str, Any] | None:
        probe = result.get("metrics", {}).get("probe")
        if probe is None:
            return None
        return {k: v for k, v in probe.items() if k not in _PROBE_RUN_KEYS}

    def write(self) -> None:
        """Rewrite ``seeds.json`` atomically (a reader never sees half a file)."""
        from distgcl.checkpoint import atomic_write_text

        self.base.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.summary(), indent=2) + "\n")

    def line(self) -> str:
        """The console's one line, e.g. ``accuracy 81.20 ± 0.60 over 3 training seeds (each:
        mean of 10 probe seeds)``."""
        s = self.summary()
        failed = (f"; failed: seed {', '.join(s['failed'])}" if s["failed"] else "")
        if not s["finished"]:
            return f"no training seed finished{failed}"
        if s["metric"] is None:
            return f"no probe score to spread over training seeds (linear probe skipped){failed}"
        probe_seeds = (s["probe"] or {}).get("seeds", "?")
        each = f"each: mean of {probe_seeds} probe seeds"
        if s["std"] is None:
            return (f"{s['metric']} {s['mean']:.2f} over {s['n']} training seed ({each}): "
                    f"no spread{failed}")
        return (f"{s['metric']} {s['mean']:.2f} ± {s['std']:.2f} over {s['n']} training seeds "
                f"({each}){failed}")
