from pathlib import Path

import pytest

from distgcl.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_config_is_valid() -> None:
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for path in configs:
        load_config(path)


def test_overrides_and_coercion() -> None:
    c = load_config(REPO / "configs/quickstart.yaml",
                    ["train.epochs=5", "train.seed=1", "train.lr=1e-3", "data.root=/x/y",
                     "grace.negatives=sampled"])
    assert c.train.epochs == 5 and c.train.seed == 1 and c.train.lr == pytest.approx(1e-3)
    assert c.data.root == "/x/y" and c.section("grace").negatives == "sampled"
    assert c.to_dict()["grace"]["negatives"] == "sampled"


@pytest.mark.parametrize("override, message", [
    ("train.epoch=5", "unknown config key 'train.epoch'"),
    ("trainer.epochs=5", "unknown config key 'trainer'"),
    ("train.epochs=abc", "train.epochs must be an integer"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.lr=0", "train.lr must be > 0"),
    ("train.lr=-1e-3", "train.lr must be > 0"),
    ("augment.edge_drop_1=1.0", r"augment.edge_drop_1 must be in \[0, 1\)"),
    ("augment.feature_mask_2=-0.1", r"augment.feature_mask_2 must be in \[0, 1\)"),
    ("model.activation=tanh", "model.activation must be one of"),
    ("method=byol", "unknown method 'byol'"),
    ("grace.tau=0", "grace.tau must be > 0"),
])
def test_bad_values_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(REPO / "configs/quickstart.yaml", [override])
    assert "\n" not in str(info.value)
