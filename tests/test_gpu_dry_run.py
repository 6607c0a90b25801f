"""The prepared GPU commands, run end to end on the CPU (`benchmarks/gpu.py --dry-run`):
every line of `make gpu` and `make gpu-train` runs before a GPU is ever seen.

Checks what they write (into a scratch folder, never under results/): the benchmark
JSON with its schema and exact results, a training run cut by its time budget and
resumed by the next call, and the packed model. It runs as on a GPU node: without
torchvision, DVC, papermill, Jupyter, matplotlib or hypothesis.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import mnist_mirror

ROOT = Path(__file__).resolve().parents[1]
NODE_LACKS = ("torchvision", "papermill", "dvc", "nbval", "jupyterlab", "matplotlib", "hypothesis")
LAUNCH = (f"import runpy, sys\nfor name in {NODE_LACKS!r}: sys.modules[name] = None\n"
          "sys.argv = ['benchmarks/gpu.py', *sys.argv[1:]]\n"
          "runpy.run_path('benchmarks/gpu.py', run_name='__main__')")
METHODS = ("xnor_cuda_core", "xnor_tensor_core", "cublas_sgemm", "tf32", "fp16", "bf16",
           "int8", "naive_float", "naive_xnor")


def _run(*args, env):
    result = subprocess.run([sys.executable, "-c", LAUNCH, *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dry_run_of_the_gpu_commands(tmp_path):
    results_before = sorted(p for p in (ROOT / "results").rglob("*") if p.is_file())
    env = {**os.environ, "QNN_DATA_MIRROR": str(mnist_mirror()),
           "QNN_DATA_DIR": str(tmp_path / "data"), "NUMBA_NUM_THREADS": "1"}
    output = _run("dry-run", "--scratch", str(tmp_path / "scratch"), env=env)
    # the first call runs out of its budget (0 s) after one epoch, the second resumes
    assert "epochs done: 1 of 2 - run the same command again to resume" in output
    assert "epochs done: 2 of 2;" in output
    out = tmp_path / "scratch" / "results"
    history = (out / "tables" / "mnist_paper_history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history] == ["epoch", "1", "2"]
    assert (out / "models" / "mnist_paper_packed.npz").stat().st_size > 0
    # the default `train`: a probe picks the epochs, and the LR decay reaches lr_end at the last
    short = json.loads((out / "metrics" / "mnist_paper_short.json").read_text())
    assert short["protocol"]["name"] == "shortened paper protocol"
    assert short["epochs"] == short["config"]["epochs"] == short["protocol"]["epochs"] == 3
    assert short["protocol"]["paper_epochs"] == 1000
    with open(out / "tables" / "mnist_paper_short_history.csv") as table:
        rates = [float(row["lr"]) for row in csv.DictReader(table)]
    config = short["config"]
    assert rates[0] == config["lr_start"]
    assert rates[-1] * (config["lr_end"] / config["lr_start"]) ** (1 / 3) == pytest.approx(config["lr_end"])
    assert (out / "models" / "mnist_paper_short_packed.npz").stat().st_size > 0
    kernels = json.loads((out / "benchmarks" / "gpu_kernels.json").read_text())
    assert kernels["dry_run"] and kernels["provenance"]["packages"]["torch"]
    for row in kernels["shapes"]:
        assert all(row[f"{method}_ms"] > 0 for method in METHODS)
        assert all(row["exact"].values()) and len(row["exact"]) == 6
    inference = json.loads((out / "benchmarks" / "gpu_inference.json").read_text())
    assert inference["model_source"] == "checkpoints/mnist_paper.pt"  # the run trained above
    assert inference["all_agree"] and inference["bnn_agree"] == inference["images"] == 256
    assert sorted(p for p in (ROOT / "results").rglob("*") if p.is_file()) == results_before
