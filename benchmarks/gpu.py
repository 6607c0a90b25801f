"""Every GPU measurement of the replication, as prepared commands (`make gpu`, `make gpu-train`).

    python3 benchmarks/gpu.py data  [--mirror DIR]   # copy the MNIST .gz files into scratch/mirror/mnist
    python3 benchmarks/gpu.py bench [--dry-run] [--out DIR]
    python3 benchmarks/gpu.py train [--dry-run] [--budget SECONDS] [--epochs N | --full]
    (--dry-run [--scratch DIR]: tiny sizes on the CPU, outputs under DIR)
    python3 benchmarks/gpu.py dry-run [--scratch DIR]  # all of it, in one process (CI)

Runs from the checkout with only the numerical stack (torch, numpy, CuPy, numba, pandas,
tqdm, pyyaml): no DVC, papermill or Jupyter, and it installs nothing.

`bench` writes results/benchmarks/gpu_kernels.json (XNOR kernels vs cuBLAS SGEMM, TF32,
FP16, BF16, INT8 and the unoptimised pair, at 8192^3 and the MNIST layer shapes) and
results/benchmarks/gpu_inference.json (the MNIST BNN on the 10k test set, bit-packed vs
float32 with the unoptimised kernel and with cuBLAS), each with `provenance()`.

`train` runs the paper's MNIST protocol (`qnn-train --section mnist_paper`, 3 x 4096) with
the step captured as a CUDA graph, shortened to what one call completes: a timing probe
chooses the epochs that fit in `--budget` seconds, and the learning rate decays from
lr_start to lr_end over those epochs. It writes results/metrics/mnist_paper_short.json
(labelled "shortened paper protocol"), its history and the packed model
results/models/mnist_paper_short_packed.npz. A device call's checkpoints cannot be
resumed by the next call, hence the default. `--full` runs the 1000 epochs instead: it
stops itself before `--budget` seconds, checkpoints, and resumes when run again (writes
mnist_paper.json and mnist_paper_packed.npz). Float checkpoints stay in checkpoints/.

`--dry-run` runs every line on a CPU with tiny sizes (the NumPy reference of each CUDA
kernel, torch on the CPU) and writes into a temporary folder, never under results/.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from benchmarks.gpu_train import (DRY_MODEL, SHORT_RUN, TRAIN_BUDGET_S, stamp_commit,  # noqa: E402
                                  train)
from qnnlib.provenance import provenance  # noqa: E402

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
LOCAL_MIRROR = Path("scratch") / "mirror"  # git-ignored (outside the `data` stage's output); carry it to a node

# (m, n, k): A (m, k) times B (n, k).T. The MNIST shapes are batch x fan_out x fan_in.
KERNEL_SHAPES = {"8192^3": (8192, 8192, 8192)} | {
    f"mnist_b{batch}_{k}to{n}": (batch, n, k)
    for batch in (100, 10000) for k, n in ((784, 4096), (4096, 4096), (4096, 10))}
# The same roles, tiny, with K not a multiple of 64 where the real one is not either.
DRY_KERNEL_SHAPES = {"8192^3": (72, 72, 72), "mnist_b100_784to4096": (4, 40, 100),
                     "mnist_b100_4096to10": (20, 10, 40)}
PAPER = {"hidden": 4096, "depth": 3}
# How qnnlib.gpu.bench.median_ms times every kernel row of gpu_kernels.json
TIMING = "median over samples of qnnlib.timing.race (device synchronised at each clock reading), ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("data", "bench", "train", "dry-run"))
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU, outputs in a temporary folder")
    parser.add_argument("--scratch", help="dry run: the folder for its results/ and "
                        "checkpoints/ (default: a new temporary folder); reuse it to resume")
    parser.add_argument("--out", help="folder for the JSON (default: results/benchmarks)")
    parser.add_argument("--mirror", help="folder of the MNIST .gz files (data)")
    parser.add_argument("--budget", type=float, default=TRAIN_BUDGET_S,
                        help="seconds of training before it checkpoints and stops (train)")
    parser.add_argument("--full", action="store_true",
                        help="train: the full 1000 epochs, resumed call after call, instead of "
                             "the shortened protocol that completes within --budget")
    parser.add_argument("--epochs", type=int, help="train: the shortened protocol's epochs "
                        "(default: as many as a timing probe says fit in --budget)")
    parser.add_argument("--min-run-time", type=float, default=0.2,
                        help="seconds per timing (bench)")
    args = parser.parse_args(argv)
    if args.command == "data":
        return copy_mnist(args.mirror)
    if args.command == "dry-run":
        return dry_run(args.scratch or tempfile.mkdtemp(prefix="qnn-gpu-dry-run-"))
    if args.dry_run:
        scratch = Path(args.scratch or tempfile.mkdtemp(prefix="qnn-gpu-dry-run-"))
        for variable, folder in (("QNN_RESULTS_DIR", "results"), ("QNN_CHECKPOINT_DIR", "checkpoints")):
            os.environ[variable] = str(scratch / folder)
        print(f"dry run: outputs under {scratch}")
    _use_local_mirror()
    return bench(args) if args.command == "bench" else train(args)


def dry_run(scratch: str) -> int:
    """`train` cut by its budget after one epoch, `train` resuming it, then `bench` on the
    model it trained: every line of `make gpu-train` and `make gpu`, on the CPU."""
    for argv in (["train", "--full", "--budget", "0"], ["train", "--full"], ["train"],
                 ["bench", "--min-run-time", "0.001"]):
        status = main([*argv, "--dry-run", "--scratch", scratch])
        if status:
            return status
    return 0


def copy_mnist(mirror: str | None) -> int:
    """Copy the four MNIST archives into scratch/mirror/mnist (what travels to a GPU node)."""
    source = Path(mirror or os.environ.get("QNN_DATA_MIRROR") or "../shared/datasets")
    source = source / "mnist" if (source / "mnist").is_dir() else source
    target = LOCAL_MIRROR / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        if not (source / name).is_file():
            print(f"error: {source / name} not found; give --mirror or QNN_DATA_MIRROR", file=sys.stderr)
            return 1
        shutil.copyfile(source / name, target / name)
    print(f"copied {len(MNIST_FILES)} files from {source} to {target}")
    return 0


def _use_local_mirror():
    """Read MNIST from scratch/mirror when it is there and no other mirror is named."""
    if not os.environ.get("QNN_DATA_MIRROR") and (LOCAL_MIRROR / "mnist").is_dir():
        os.environ["QNN_DATA_MIRROR"] = str(LOCAL_MIRROR.resolve())


def bench(args) -> int:
    from qnnlib.gpu.bench import inference_benchmark, kernel_benchmark
    from qnnlib.gpu.ops import get_ops
    from qnnpipeline import paths

    start = time.perf_counter()
    ops = get_ops(args.dry_run)
    out = Path(args.out) if args.out else paths.results_dir() / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    shapes = DRY_KERNEL_SHAPES if args.dry_run else KERNEL_SHAPES
    rows = kernel_benchmark(ops, shapes, args.min_run_time)
    _write(out / "gpu_kernels.json", {"backend": ops.name, "dry_run": args.dry_run,
                                      "timing": TIMING,
                                      "shapes": rows}, start)
    images = _test_images(args.dry_run)
    model, source = _bnn(args.dry_run, images)
    result = inference_benchmark(ops, model, images, args.min_run_time)
    result["model_source"] = source
    _write(out / "gpu_inference.json", {"backend": ops.name, "dry_run": args.dry_run, **result}, start)
    eight = next(row for row in rows if row["shape"] == "8192^3")
    print(f"8192^3: tensor-core XNOR {_x(eight['tensor_core_vs_sgemm'])}, CUDA-core "
          f"{_x(eight['cuda_core_vs_sgemm'])} vs cuBLAS SGEMM; unoptimised pair "
          f"{_x(eight['naive_xnor_vs_naive_float'])}; MNIST BNN {_x(result['bnn_vs_float_naive'])} "
          f"vs unoptimised float32, {_x(result['bnn_vs_float_cublas'])} vs cuBLAS; labels agree: "
          f"{result['all_agree']}")
    return 0 if result["all_agree"] and all(all(r["exact"].values()) for r in rows) else 1


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.1f}x"


def _write(path: Path, value: dict, start: float) -> None:
    value["provenance"] = provenance(wall_seconds=time.perf_counter() - start)
    stamp_commit(value)
    path.write_text(json.dumps(value, indent=2) + "\n")
    print(f"wrote {path}")


def _test_images(dry_run: bool):
    """uint8 (N, 784) MNIST test images (256 of them in a dry run)."""
    from qnnlib.data import load_mnist
    from qnnpipeline import paths

    test = load_mnist(root=paths.data())["test"]
    count = 256 if dry_run else len(test)
    return test.images[:count].reshape(count, -1).numpy()


def _bnn(dry_run: bool, images: np.ndarray):
    """The trained paper-scale BNN (checkpoints/mnist_paper.pt, else the shortened
    protocol's mnist_paper_short.pt) when present, else the paper's architecture untrained,
    batch norm calibrated on the images. Timing does not depend on the weights' values;
    label agreement does: untrained scores are nearly tied, and float rounding can flip
    a few of them (9,997 of 10,000 agreed on the H200), so a trained model is preferred."""
    from qnnlib.models import build_model
    from qnnpipeline import paths
    from qnnpipeline.runs import load_json

    for name in ("mnist_paper", SHORT_RUN):
        description = load_json(paths.checkpoints() / f"{name}.json")
        weights = paths.checkpoints() / f"{name}.pt"
        if description and weights.is_file():
            model = build_model(description["model"])
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            return model.eval(), f"checkpoints/{name}.pt"
    from qnnlib.data import scale_inputs

    torch.manual_seed(0)
    device = "cpu" if dry_run else "cuda"
    model = build_model({"kind": "bnn", **(DRY_MODEL if dry_run else PAPER)}).to(device)
    with torch.no_grad():  # running statistics from the images (momentum 0.1: 30 passes)
        inputs = scale_inputs(torch.from_numpy(images[:1000])).to(device)
        for _ in range(30):
            model(inputs)
    return model.eval(), "untrained, batch norm calibrated on test images"


if __name__ == "__main__":
    sys.exit(main())
