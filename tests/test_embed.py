"""Label-free graphs, the exported embeddings and encoder, and ``distgcl embed``."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from distgcl.checkpoint import CheckpointManager
from distgcl.cli import main
from distgcl.export import load_encoder
from distgcl.nn import GCNEncoder

REPO = Path(__file__).resolve().parents[1]
SKIP_LINE = "the graph has no labels (data.y): linear probe and clustering skipped"
COMMON = ["data.name=file", "train.progress=false", "train.threads=1", "train.epochs=3",
          "model.out_dim=16", "eval.probe_seeds=2", "eval.probe_epochs=20"]
METHODS = {
    "grace": ["method=grace", "model.proj_dim=16"],
    "nml": ["method=nml", "model.proj_dim=0", "model.activation=rrelu",
            "model.activate_last=false", "nml.inner_steps=1"],
    "e2neg": ["method=e2neg", "model.layers=1", "model.proj_dim=16", "e2neg.clusters=4",
              "e2neg.num_neighbors=20", "e2neg.min_neighbors=10"],
}


def _label_free_graph(num_nodes: int = 240, num_features: int = 16, seed: int = 0) -> Data:
    """Planted partition (4 blocks) with non-negative block-signal features and NO ``y``."""
    g = torch.Generator().manual_seed(seed)
    block = torch.arange(num_nodes) % 4
    prob = torch.where(block[:, None] == block[None, :], 0.08, 0.004)
    upper = torch.triu(torch.rand(num_nodes, num_nodes, generator=g) < prob, diagonal=1)
    row, col = upper.nonzero().t()
    ei = torch.cat([torch.stack([row, col]), torch.stack([col, row])], dim=1)
    signal = torch.nn.functional.one_hot(block, 4).float().repeat(1, num_features // 4)
    x = signal + 0.5 * torch.rand(num_nodes, num_features, generator=g)
    return Data(x=x, edge_index=ei)


def _train(out: Path, graph: Path, *extra: str) -> tuple[int, str]:
    args = ["train", str(REPO / "configs/quickstart.yaml"), "--out", str(out)]
    for item in [*COMMON, f"data.path={graph}", *extra]:
        args += ["--set", item]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    return code, stdout.getvalue()


def _reference_embeddings(run: Path, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """Independent of the export path: PyG's message-passing forward of the rebuilt encoder, on
    features row-normalized here by hand."""
    loaded = load_encoder(run)
    if loaded.meta["preprocessing"]["normalize_features"]:
        x = x / x.sum(1, keepdim=True)
    with torch.no_grad():
        return loaded.encoder(x, edge_index)


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("graphs") / "graph.pt"
    torch.save(_label_free_graph(), path)
    return path


@pytest.mark.parametrize("method", sorted(METHODS))
def test_label_free_graph_trains_and_writes_embeddings(tmp_path: Path, graph_file: Path,
                                                       method: str) -> None:
    run = tmp_path / method
    code, out = _train(run, graph_file, *METHODS[method])
    assert code == 0
    assert out.count(SKIP_LINE) == 1  # said once, in one line
    result = json.loads((run / "result.json").read_text())
    reason = "the graph has no labels (data.y)"
    assert result["metrics"] == {"skipped": {"linear_probe": reason, "clustering": reason}}
    z = torch.load(run / "embeddings.pt")
    assert z.dtype == torch.float32 and z.shape == (240, 16)
    assert result["outputs"] == {"embedding_shape": [240, 16], "encoder": "encoder.pt",
                                 "embeddings": ["embeddings.pt"]}
    graph = torch.load(graph_file, weights_only=False)
    torch.testing.assert_close(z, _reference_embeddings(run, graph.x, graph.edge_index),
                               atol=1e-5, rtol=1e-4)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.fixture(scope="module")
def grace_run(tmp_path_factory: pytest.TempPathFactory, graph_file: Path) -> Path:
    """GRACE on the label-free graph, row-normalized features, embeddings in batches of 64 rows,
    .npy requested, and a checkpoint after the last step (an independent copy of the weights)."""
    run = tmp_path_factory.mktemp("runs") / "grace"
    code, _ = _train(run, graph_file, *METHODS["grace"], "data.normalize_features=true",
                     "eval.embed_batch_size=64", "eval.save_embeddings_npy=true",
                     "train.checkpoint_every=3")
    assert code == 0
    return run


def test_exported_encoder_is_the_trained_one(grace_run: Path) -> None:
    loaded = load_encoder(grace_run)
    state = CheckpointManager(grace_run / "checkpoints").load()
    assert state is not None and state["global_step"] == 3
    trained = {k[len("model.encoder."):]: v for k, v in state["model"].items()
               if k.startswith("model.encoder.")}
    exported = loaded.encoder.state_dict()
    assert exported.keys() == trained.keys() and len(exported) > 0
    assert all(torch.equal(exported[k], trained[k]) for k in exported)
    assert loaded.meta["hparams"] == {"in_dim": 16, "out_dim": 16, "hidden_dim": 32,
                                      "layers": 2, "activation": "prelu", "activate_last": True}
    assert loaded.meta["preprocessing"] == {"normalize_features": True, "log_features": False,
                                               "standardize_features": False}
    np.testing.assert_array_equal(np.load(grace_run / "embeddings.npy"),
                                  torch.load(grace_run / "embeddings.pt").numpy())


def test_embed_training_graph_reproduces_run_embeddings_exactly(
        grace_run: Path, graph_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    expected = torch.load(grace_run / "embeddings.pt")
    assert main(["embed", str(grace_run), "--graph", str(graph_file), "--out",
                 str(tmp_path / "again.pt")]) == 0
    assert "embedded 240 nodes (16 dims)" in capsys.readouterr().out
    assert torch.equal(torch.load(tmp_path / "again.pt"), expected)
    # without --graph: the run's own training graph, found through its config
    assert main(["embed", str(grace_run), "--out", str(tmp_path / "again.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), expected.numpy())


def test_embed_new_graph_with_same_width(grace_run: Path, tmp_path: Path) -> None:
    new = _label_free_graph(num_nodes=100, seed=5)
    torch.save(new, tmp_path / "new.pt")
    assert main(["embed", str(grace_run), "--graph", str(tmp_path / "new.pt")]) == 0
    z = torch.load(grace_run / "embeddings-new.pt")  # the default output name
    assert z.shape == (100, 16)
    torch.testing.assert_close(z, _reference_embeddings(grace_run, new.x, new.edge_index),
                               atol=1e-5, rtol=1e-4)


def test_embed_bad_input_is_one_line_and_exit_2(grace_run: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    torch.save(_label_free_graph(num_nodes=40, num_features=12), tmp_path / "narrow.pt")
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "broken_run").mkdir()
    (tmp_path / "broken_run" / "encoder.pt").write_bytes(b"not a torch file")
    cases = [
        (["embed", str(grace_run), "--graph", str(tmp_path / "narrow.pt")],
         f"has 12 features per node, but the encoder of {grace_run} was trained on 16"),
        (["embed", str(tmp_path / "no_such_run")],
         f"run directory {tmp_path / 'no_such_run'} does not exist"),
        (["embed", str(tmp_path / "empty_run")], "has no encoder.pt"),
        (["embed", str(tmp_path / "broken_run")], "cannot read"),
        (["embed", str(grace_run), "--graph", str(tmp_path / "missing.pt")],
         "graph file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_embed_sparse_rows_in_batches_change_nothing() -> None:
    graph = _label_free_graph(num_nodes=300)
    # 16 -> 8 multiplies the operator by H W, 16 -> 64 propagates H first (the wider output)
    for layers, activation, width in ((1, "prelu", 8), (2, "rrelu", 8), (3, "relu", 8),
                                      (1, "prelu", 64), (2, "relu", 64)):
        torch.manual_seed(layers)
        enc = GCNEncoder(16, width, layers=layers, activation=activation).eval()
        whole = enc.embed_sparse(graph.x, graph.edge_index)
        for batch_size in (1, 7, 64, 299, 300, 1000):
            assert torch.equal(enc.embed_sparse(graph.x, graph.edge_index, batch_size), whole)
        with torch.no_grad():
            torch.testing.assert_close(whole, enc(graph.x, graph.edge_index), atol=1e-5,
                                       rtol=1e-4)
