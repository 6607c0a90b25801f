"""qnnpipeline.runs: what a finished training run writes, with its provenance."""
import json

import pandas as pd
import pytest

from qnnlib.models import mnist_mlp
from qnnlib.training import TrainConfig, train
from qnnpipeline.runs import save_run
from support import synthetic_splits


CONFIG = {"model": {"kind": "bnn", "hidden": 16, "depth": 1}, "data": {"dataset": "mnist"}}


def test_save_run_writes_metrics_and_history(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    result = train(mnist_mlp(hidden=16, depth=1), synthetic_splits(),
                   TrainConfig(epochs=2, progress=False))
    written = save_run(result, CONFIG, "unit")
    assert written["metrics"] == tmp_path / "metrics" / "unit.json"
    metrics = json.loads(written["metrics"].read_text())
    assert metrics["best_epoch"] == result.best_epoch
    assert metrics["test_error_pct"] == round(100 * result.test_error, 2)
    assert metrics["config"]["epochs"] == 2 and metrics["epochs"] == 2
    assert metrics["model"] == CONFIG["model"] and metrics["data"] == CONFIG["data"]
    history = pd.read_csv(written["history"])
    assert history["epoch"].tolist() == [1, 2]
    assert history["val_error"].tolist() == pytest.approx(result.history["val_error"].tolist())
    record = metrics["provenance"]
    assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)
    assert record["packages"]["torch"] and record["cpu"] and record["threads"] >= 1


def test_a_pending_placeholder_reads_as_absent(tmp_path, monkeypatch):
    from qnnpipeline.runs import load_metrics

    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "gpu_run.json").write_text('{"status": "pending", "reason": "needs GPU"}')
    (tmp_path / "metrics" / "cpu_run.json").write_text('{"test_error": 0.0182}')
    assert load_metrics("gpu_run") is None
    assert load_metrics("missing") is None
    assert load_metrics("cpu_run") == {"test_error": 0.0182}
