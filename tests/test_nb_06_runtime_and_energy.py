"""Notebook 06 (bit-packed inference: agreement, memory, CPU speed, energy) runs on a tiny
trained BNN, reproduces under nbval and writes sane results; its metrics build the claims
table, whose GPU rows say pending."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from notebook_check import run_and_validate
from qnnpipeline import claims, cli
from qnnpipeline.claims_table import assemble
from qnnlib.deploy import BinaryMLP

NAME = "06_runtime_and_energy"
SMALL_PARAMS = dict(run="tiny_bnn", n_test=500, threads=1,
                    batch_sizes=[1, 100], repeats=1, min_sample_s=0.001, kernel_sizes=[64, 128],
                    kernel_repeats=1)


def train_tiny(tmp_path, monkeypatch, name: str) -> None:
    """`qnn-train` a tiny BNN into the folders run_and_validate points the notebook at."""
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump({name: {
        "model": {"kind": "bnn", "hidden": 64, "depth": 2},
        "train": {"epochs": 1, "n_train": 1000, "n_val": 500, "n_test": 500, "progress": False,
                  "threads": 1},
        "data": {"dataset": "mnist"}}}))
    assert cli.main(["--config", str(config), "--section", name]) == 0


@pytest.mark.slow
def test_runtime_and_energy_notebook(tmp_path, monkeypatch):
    train_tiny(tmp_path, monkeypatch, "tiny_bnn")
    results = run_and_validate(NAME, SMALL_PARAMS, tmp_path, monkeypatch)

    metrics = json.loads((results / "metrics" / f"{NAME}.json").read_text())
    assert metrics["prediction_agreement_pct"] == 100.0 and metrics["n_test_images"] == 500
    assert 0 <= metrics["test_error_pct"] <= 100
    memory = metrics["weight_memory"]
    assert 10 < memory["ratio"] < 32
    assert memory["ratio"] == pytest.approx(memory["float_file_bytes"] / memory["packed_file_bytes"], abs=0.01)
    paper_net = metrics["energy_uJ_per_image"]["paper_net"]
    assert paper_net["float32"] > paper_net["bnn"] > 0 and paper_net["ratio"] > 10
    assert set(metrics["cpu_speedup"]) == {"batch_1", "batch_100"}
    assert set(metrics["cpu_kernel_speedup"]) == {"n_64", "n_128"}
    assert all(v > 0 for v in metrics["cpu_speedup"].values())
    for median_key, range_key in (("cpu_speedup", "cpu_speedup_range"), ("cpu_kernel_speedup", "cpu_kernel_speedup_range")):
        for key, (low, high) in metrics[range_key].items():   # the median lies within the rounds' range
            assert low - 0.05 <= metrics[median_key][key] <= high + 0.05
    assert metrics["float_baseline_numerics"]["profile"] == "native"
    assert metrics["gpu_gemm_vs_cublas"] == "pending (needs GPU)"

    # the packed engine written next to the checkpoint loads and predicts
    engine = BinaryMLP.load(results / "models" / "tiny_bnn_binary.npz")
    assert engine.predict(np.zeros((2, 28, 28), np.uint8)).shape == (2,)

    tables = results / "tables"
    speed = pd.read_csv(tables / f"{NAME}_speed.csv")
    assert speed["batch"].tolist() == [1, 100] and (speed[["torch_fp32_ms", "bnn_ms"]] > 0).all().all()
    kernel = pd.read_csv(tables / f"{NAME}_kernel.csv")
    assert kernel["n"].tolist() == [64, 128] and (kernel["speedup"] > 0).all()
    energy = pd.read_csv(tables / f"{NAME}_energy.csv")
    assert len(energy) == 4 and set(energy["network"]) == {"float32", "bnn"}
    assert (energy["total_uJ"] > 0).all()
    memory_table = pd.read_csv(tables / f"{NAME}_memory.csv")
    assert len(memory_table) == 4 and (memory_table["bytes"] > 0).all()

    assert not (tables / "claims.csv").exists()   # a separate stage writes it
    assert metrics["network"]["shape"] == "2 x 64" and metrics["energy_model"]["ratio_total"] > 10
    run = json.loads((results / "metrics" / "tiny_bnn.json").read_text())
    table = assemble({NAME: metrics, "mnist_cpu": run}, {"xnor_gemm": None})
    assert list(table.columns) == claims.COLUMNS and len(table) == len(claims.CLAIMS)
    rows = table.set_index("claim")["ours"]
    for key in ("mnist_error_paper", "gemm_vs_cublas", "gemm_vs_unoptimised", "mnist_runtime_gpu"):
        assert rows[claims.CLAIMS[key]["claim"]] == "pending (needs GPU)"
    assert rows[claims.CLAIMS["weight_memory"]["claim"]].endswith("x less")
    assert rows[claims.CLAIMS["mnist_error_cpu"]["claim"]].endswith(" % (seed 0, single run)")

    for figure in ("06_xnor_speedup", "06_energy_per_image"):
        for suffix in (".png", ".pdf"):
            path = results / "figures" / f"{figure}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
        assert figure in json.loads((results / "figures" / f"{figure[:2]}_captions.json").read_text())
    # the energy figure is a model: its caption and the figure itself say so
    caption = json.loads((results / "figures" / "06_captions.json").read_text())["06_energy_per_image"]
    assert caption.startswith("Modelled energy per MNIST image (not a measurement")
    executed = json.loads((tmp_path / f"{NAME}.ipynb").read_text())
    assert 'fig.suptitle("Modelled, not measured' in "".join("".join(c["source"]) for c in executed["cells"])
