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
