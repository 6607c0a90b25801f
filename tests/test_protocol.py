"""qnnpipeline.protocol: a run's settings, checked against values written out by hand."""
import pytest

from qnnpipeline.protocol import describe, paper_settings, recent_change, run_settings

PAPER = {"hidden": 4096, "depth": 3, "epochs": 1000, "batch_size": 100, "n_train": 50000,
         "lr_start": 0.003, "lr_end": 3e-07, "dropout_in": 0.2, "dropout_hidden": 0.5}


def test_paper_protocol():
    assert paper_settings(PAPER) == {
        "weights / activations": "binary / binary", "hidden units": 4096, "hidden layers": 3,
        "dropout in / hidden": "0.2 / 0.5", "training images": 50000, "epochs": 1000,
        "batch size": 100, "lr start -> end": "0.003 -> 3e-07",
        "lr factor per epoch": "0.9908"}   # (1e-4)^(1/1000) = 0.99083


def test_run_settings_of_a_budget_run_and_of_an_unknown_model():
    run = {"model": {"kind": "full_precision", "hidden": 2048, "depth": 3, "dropout_in": 0.0},
           "metrics": {"config": {"epochs": 25, "batch_size": 100, "n_train": None,
                                  "lr_start": 0.003, "lr_end": 3e-05}}}
    s = run_settings(run)
    assert s["weights / activations"] == "float32 / hard tanh"
    assert s["dropout in / hidden"] == "0.0 / 0.5" and s["training images"] == 50000
    assert s["lr factor per epoch"] == "0.8318"          # 0.01 ** (1 / 25) = 0.83176
    assert describe(run) == "full precision, 3 x 2048, 25 epochs"
    # issue 19.2: a fresh clone has no checkpoints/NAME.json; the metrics file says it all
    from_metrics = {"name": "r", "model": None, "metrics": {**run["metrics"], "model": run["model"]}}
    assert run_settings(from_metrics) == s
    with pytest.raises(ValueError, match="'r': its model is not recorded"):
        run_settings({**from_metrics, "metrics": run["metrics"]})  # was "full precision, ? x ?"
    with pytest.raises(ValueError, match="unknown model kind 'fp'"):
        run_settings({"name": "r", "model": {"kind": "fp"}, "metrics": run["metrics"]})


def test_recent_change_compares_the_last_epochs_with_the_ones_before():
    # last three 1, 1, 1 vs the three before 4, 3, 2: mean 1 - mean 3 = -2
    assert recent_change([9, 4, 3, 2, 1, 1, 1]) == pytest.approx(-2.0)
    assert recent_change([2, 2, 2, 2], window=2) == 0.0
    assert recent_change([1, 2, 3, 4, 5], window=3) is None
