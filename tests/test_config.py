import subprocess
import sys
from pathlib import Path

import pytest

import distgcl.methods  # noqa: F401  (registers the method sections)
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
    ("train.progress=1", "train.progress must be true or false"),
    ("train.epochs=true", "train.epochs must be an integer"),
    ("train.epochs=2.5", "train.epochs must be an integer"),
    ("train.threads=x", "train.threads must be an integer"),
    ("data.csbm.nodes=5", "unknown config key 'data.csbm.nodes'; known keys in data.csbm: num_nodes"),
    ("data.csbm=5", "data.csbm must be a mapping"),
    ("grace.foo=1", "unknown config key 'grace.foo'; known keys in grace:"),
    ("eval.protocol=grace", "eval.protocol must be one of 'default', 'pygcl-10-80-10'"),
    ("eval.probe_c_grid=[1, x]", r"eval.probe_c_grid\[1\] must be a number"),
    ("eval.probe_c_grid=[]", "eval.probe_c_grid must be a non-empty list"),
    ("dist.startup_timeout_s=0", "dist.startup_timeout_s must be > 0"),
    ("dist.startup_timeout_s=-5", "dist.startup_timeout_s must be > 0"),
])
def test_bad_values_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(REPO / "configs/quickstart.yaml", [override])
    assert "\n" not in str(info.value)


def test_startup_timeout_default_a_user_accepts() -> None:
    c = load_config(REPO / "configs/quickstart.yaml", ["dist.startup_timeout_s=12.5"])
    assert c.dist.startup_timeout_s == 12.5
    assert load_config(REPO / "configs/quickstart.yaml").dist.startup_timeout_s == 300.0


def test_numbers_parse_as_a_user_means() -> None:
    c = load_config(REPO / "configs/quickstart.yaml", ["train.lr=1e-3", "train.weight_decay=0",
                                                        "eval.probe_c_grid=[1, 2e2]"])
    assert c.train.lr == 1e-3 and isinstance(c.train.lr, float)  # YAML 1.1 would say "1e-3"
    assert c.train.weight_decay == 0.0 and isinstance(c.train.weight_decay, float)
    assert c.eval.probe_c_grid == [1.0, 200.0]


def test_config_imports_no_method() -> None:
    """One import direction: distgcl.config knows no method; the methods register themselves."""
    code = ("import sys, distgcl.config as c; "
            "assert not [m for m in sys.modules if m.startswith('distgcl.methods')], 'cycle'; "
            "assert c.METHOD_SECTIONS == {}; "
            "import distgcl.methods; print(sorted(c.METHOD_SECTIONS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['e2neg', 'grace', 'nml']"
    code = ("import distgcl.config as c\ntry:\n    c.load_config(None)\n"
            "except c.ConfigError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "import distgcl.methods" in out.stdout
