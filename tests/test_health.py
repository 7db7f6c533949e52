import torch

from distgcl.data.splits import random_split
from distgcl.eval import linear_probe
from distgcl.health import embedding_health, report_health


def test_healthy_embeddings_give_no_warning():
    warnings, stats = embedding_health(torch.randn(50, 8), [3, 3], num_classes=3)
    assert warnings == [] and stats["ok"] and stats["nonfinite"] == 0
    assert 1.0 < stats["norm_mean"] < 10.0


def test_extreme_nonfinite_and_single_class_are_flagged(capsys):
    z = torch.randn(50, 8) * 1e10
    warnings, stats = embedding_health(z, [3, 3], num_classes=3)
    assert not stats["ok"] and len(warnings) == 1 and "extreme embedding norms" in warnings[0]
    z = torch.randn(50, 8)
    z[3, 1] = float("nan")
    warnings, stats = embedding_health(z)
    assert stats["nonfinite"] == 1 and "non-finite" in warnings[0]
    warnings, _ = embedding_health(torch.randn(50, 8), [1, 3], num_classes=3)
    assert warnings == ["the linear probe predicts a single class on the test set (1 of 2 seeds)"]
    stats = report_health(torch.randn(50, 8) * 1e10,
                          {"probe_predicted_classes": [1]}, num_classes=3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("distgcl: WARNING") and len(stats["warnings"]) == 2


def test_probe_reports_predicted_classes():
    y = torch.arange(300) % 3
    z = 10 * torch.nn.functional.one_hot(y, 3).float() + 0.01 * torch.randn(300, 3)
    splits = [random_split(300, 0)]
    assert linear_probe(z, y, splits, epochs=200).predicted_classes == [3]
    collapsed = linear_probe(torch.zeros(300, 3), y, splits, epochs=50)
    assert collapsed.predicted_classes == [1]
    warnings, _ = embedding_health(torch.zeros(300, 3), collapsed.predicted_classes, num_classes=3)
    assert any("single class" in w for w in warnings)
