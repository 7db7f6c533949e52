import sys

import pytest
import torch

from distgcl.memory import PhasePeak, current_rss_mb, peak_rss_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_phase_peak_measures_the_phase_and_keeps_the_whole_run_peak() -> None:
    ballast = torch.ones(256 * 2**20 // 4)  # 256 MB before the phase, then freed
    del ballast
    whole_run_before = peak_rss_mb()
    phase = PhasePeak().start()
    block = torch.ones(64 * 2**20 // 4)  # 64 MB touched inside the phase, then freed
    del block
    phase.stop()
    assert phase.extra_mb is not None and 48 <= phase.extra_mb <= 160
    # the ballast is not in the phase's peak, but the reset must not erase it from the run's
    assert phase.peak_mb < whole_run_before - 100
    assert peak_rss_mb() >= whole_run_before
    assert current_rss_mb() is not None
    assert set(phase.as_dict("training")) == {"training_rss_before_mb", "training_peak_rss_mb",
                                              "training_extra_mb"}
