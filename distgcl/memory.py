"""Process memory readings for result.json: whole-run peak and the peak of one phase.

Linux keeps one high-water mark of the resident set per process (``VmHWM``); writing ``5`` to
``/proc/self/clear_refs`` resets it to the current RSS, which turns it into a per-phase peak. The
training phase's own footprint (``training_peak - before``) is the CPU analogue of the GPU memory
papers report: it leaves out the interpreter, the libraries and the loaded dataset that every
method shares. Elsewhere (no /proc) only the whole-run peak from ``getrusage`` is available.

The reset also lowers what ``getrusage`` reports as the process's maximum RSS (Linux derives it
from the same high-water mark), so the mark is read just before each reset and
:func:`peak_rss_mb` keeps the larger of the two.
"""
from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_peak_before_resets_mb = 0.0  # the highest high-water mark seen just before a reset


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, over the whole run (MB)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
               _peak_before_resets_mb)


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def current_rss_mb() -> float | None:
    """Resident set size now, or None where /proc is unavailable."""
    return _status_mb("VmRSS")


class PhasePeak:
    """Peak RSS of one phase: ``start()`` before it, ``stop()`` after it, then ``as_dict()``.

    ``before_mb`` is the RSS at ``start()``, ``peak_mb`` the highest RSS until ``stop()`` and
    ``extra_mb`` their difference (all None where the high-water mark cannot be reset).
    """

    def __init__(self) -> None:
        self.before_mb: float | None = None
        self.peak_mb: float | None = None

    def start(self) -> "PhasePeak":
        global _peak_before_resets_mb
        _peak_before_resets_mb = max(_peak_before_resets_mb, _status_mb("VmHWM") or 0.0)
        try:
            _CLEAR_REFS.write_text("5")
        except OSError:
            return self
        self.before_mb = current_rss_mb()
        return self

    def stop(self) -> None:
        if self.before_mb is not None:
            self.peak_mb = _status_mb("VmHWM")

    @property
    def extra_mb(self) -> float | None:
        if self.before_mb is None or self.peak_mb is None:
            return None
        return max(self.peak_mb - self.before_mb, 0.0)

    def as_dict(self, prefix: str) -> dict[str, float | None]:
        return {f"{prefix}_rss_before_mb": self.before_mb, f"{prefix}_peak_rss_mb": self.peak_mb,
                f"{prefix}_extra_mb": self.extra_mb}
