"""Notebook 05 (the paper's MNIST experiment beside Table 1) runs on tiny training runs,
reproduces under nbval, and says "pending" for the paper-scale run that does not exist."""
import json

import pandas as pd
import pytest
import yaml

from notebook_check import run_and_validate
from qnnpipeline import cli, paths

NAME = "05_mnist_results"
TRAIN = {"epochs": 2, "n_train": 1000, "n_val": 500, "n_test": 500, "progress": False, "threads": 1}
PAPER = {"BNN (Theano)": 0.96, "BNN (Torch7)": 1.40, "BinaryConnect": 1.29, "EBP": 2.2,
         "Bitwise DNNs": 1.33}
SMALL_PARAMS = dict(cpu_run="tiny_bnn", fp_run="tiny_fp", paper_run="tiny_paper", paper_results=PAPER)


def train_tiny(tmp_path, monkeypatch, name: str, kind: str) -> None:
    """`qnn-train` a tiny network into the folders run_and_validate points the notebook at."""
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({name: {"model": {"kind": kind, "hidden": 64, "depth": 2},
                                             "train": TRAIN, "data": {"dataset": "mnist"}}}))
    assert cli.main(["--config", str(config), "--section", name]) == 0


@pytest.mark.slow
def test_mnist_results_notebook(tmp_path, monkeypatch):
    train_tiny(tmp_path, monkeypatch, "tiny_bnn", "bnn")
    train_tiny(tmp_path, monkeypatch, "tiny_fp", "full_precision")
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    assert metrics["paper_test_error_pct"] == PAPER
    for key in ("bnn_cpu", "fp_cpu"):
        run = metrics[key]
        assert 0 <= run["test_error_pct"] <= 100 and 0 <= run["best_val_error_pct"] <= 100
        assert 1 <= run["best_epoch"] <= run["epochs"] == 2 and run["hidden"] == 64
    assert metrics["bnn_paper"] == {"status": "pending (needs GPU)"}
    assert metrics["bnn_minus_fp_pct_points"] == pytest.approx(
        metrics["bnn_cpu"]["test_error_pct"] - metrics["fp_cpu"]["test_error_pct"], abs=0.011)

    table = pd.read_csv(results / "tables" / f"{NAME}_table.csv")
    assert len(table) == len(PAPER) + 3
    assert table["test_error_pct"].iloc[:len(PAPER)].tolist() == list(PAPER.values())
    ours = table.iloc[len(PAPER):]
    assert ours["status"].tolist() == ["measured", "measured", "pending (needs GPU)"]
    assert ours["test_error_pct"].iloc[:2].between(0, 100).all() and pd.isna(ours["test_error_pct"].iloc[2])
    assert "3 x 4096, 1000 epochs" in ours["method"].iloc[2]

    protocol = pd.read_csv(results / "tables" / f"{NAME}_protocol.csv", index_col="setting")
    assert list(protocol.columns) == ["paper (Sec. 4.1)", "tiny_bnn", "tiny_fp"]
    assert protocol.loc["epochs"].tolist() == ["1000", "2", "2"]
    assert protocol.loc["hidden units"].tolist() == ["4096", "64", "64"]
    assert protocol.loc["lr factor per epoch", "paper (Sec. 4.1)"] == "0.9908"

    for figure in ("05_test_error_vs_paper", "05_learning_curves"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
