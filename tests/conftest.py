import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("DISTGCL_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = _shared_data()
    if not (root / "Planetoid" / "Cora" / "raw").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the shared datasets at {root}")
        pytest.skip(f"shared datasets not found at {root}")
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distgcl-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    # Never touch the user's ~/.cache from tests.
    monkeypatch.setenv("DISTGCL_CACHE", str(cache_dir))


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.gpu`` (or ``gpu(count=2)``): skip unless that many CUDA GPUs are visible
    (PyG's ``withCUDA``); the GPU tests skip cleanly on a CPU-only machine such as CI."""
    marker = item.get_closest_marker("gpu")
    if marker is None:
        return
    need, have = int(marker.kwargs.get("count", 1)), _cuda_devices()
    if have < need:
        pytest.skip(f"needs {need} CUDA GPU(s), this machine has {have}")
