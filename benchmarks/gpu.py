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
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from qnnlib.data import N_TRAIN  # noqa: E402
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
DRY_MODEL = {"hidden": 48, "depth": 2}
# How qnnlib.gpu.bench.median_ms times every kernel row of gpu_kernels.json
TIMING = "median over samples of qnnlib.timing.race (device synchronised at each clock reading), ms"
TRAIN_BUDGET_S = 480  # s of training per call: with start-up and saving, a call ends before 9.5 min
SHORT_RUN = "mnist_paper_short"  # `train` without --full: the shortened paper protocol
PROBE_EPOCHS = 3  # timed before a shortened run, to choose its epochs
SAFETY = 0.9  # of the time left, what the shortened run plans to use
DRY_EPOCHS = 3  # a dry run's shortened protocol trains at most this many epochs


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
    _stamp_commit(value)
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


def train(args) -> int:
    """The paper's protocol, shortened to what one device call completes (default), or the
    full 1000 epochs resumed call after call (`--full`)."""
    return train_full(args) if args.full else train_short(args)


def _qnn_train(name: str, sets: list[str], checkpoint: Path | None = None) -> int:
    from qnnpipeline import paths
    from qnnpipeline.cli import main as qnn_train

    argv = ["--config", str(paths.root() / "params.yaml"), "--section", "mnist_paper",
            "--out-name", name, *(f for s in sets for f in ("--set", s))]
    return qnn_train(argv + (["--checkpoint", str(checkpoint)] if checkpoint else []))


def _base_sets(dry_run: bool) -> list[str]:
    sets = ["train.cuda_graph=true", "train.progress=false"]
    if dry_run:
        sets += [f"model.hidden={DRY_MODEL['hidden']}", f"model.depth={DRY_MODEL['depth']}",
                 "train.n_train=300", "train.n_val=200", "train.n_test=200",
                 "train.device=cpu", "train.threads=1"]
    return sets


def train_short(args) -> int:
    """`mnist_paper` with its epochs cut to what fits in `--budget` seconds, every other
    setting the paper's, and the exponential learning-rate decay run to its end (lr_end)
    over those epochs: a shortened paper protocol, complete in one call. The epoch count
    comes from timing `PROBE_EPOCHS` epochs of the same run first (or from `--epochs`)."""
    from qnnpipeline import paths

    from qnnpipeline.params import train_section

    start = time.monotonic()
    base = _base_sets(args.dry_run)
    paper_epochs = train_section(paths.root() / "params.yaml", "mnist_paper")["train"]["epochs"]
    most = DRY_EPOCHS if args.dry_run else paper_epochs
    epochs = args.epochs
    if epochs is None:
        epoch_s = _probe_epoch_seconds(base)
        left = args.budget - (time.monotonic() - start)
        epochs = max(1, min(most, int(SAFETY * left / epoch_s)))
        print(f"probe: {epoch_s:.2f} s per epoch; {left:.0f} s left: {epochs} epochs")
    left = max(1.0, args.budget - (time.monotonic() - start))
    status = _qnn_train(SHORT_RUN, [*base, f"train.epochs={epochs}", f"train.max_seconds={left}"])
    if status:
        return status
    metrics_path = paths.results("metrics", f"{SHORT_RUN}.json")
    metrics = json.loads(metrics_path.read_text())
    metrics["protocol"] = {
        "name": "shortened paper protocol",
        "epochs": epochs, "paper_epochs": paper_epochs,
        "note": (f"the paper's MNIST protocol (3 x 4096 BNN, batch 100, Adam, LR "
                 f"{metrics['config']['lr_start']:g} decayed exponentially to "
                 f"{metrics['config']['lr_end']:g}) with {epochs} epochs instead of "
                 f"{paper_epochs}: the decay reaches lr_end at the last epoch"),
        "epochs_chosen_by": "--epochs" if args.epochs else f"a {PROBE_EPOCHS}-epoch timing probe"}
    _stamp_commit(metrics)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    complete = metrics["epochs"] >= epochs
    print(f"shortened paper protocol: {metrics['epochs']} of {epochs} epochs"
          + ("" if complete else " (stopped by the budget: not the planned protocol)")
          + f"; test error {100 * metrics['test_error']:.2f} % at best-validation epoch "
          f"{metrics['best_epoch']}; packed model: {_pack_model(paths, SHORT_RUN)}")
    return 0 if complete else 1


def _probe_epoch_seconds(base: list[str]) -> float:
    """Seconds per epoch of the run itself (step, evaluation and all), timed on
    `PROBE_EPOCHS` epochs in a scratch folder; the first epoch (graph capture) is left out."""
    saved = {v: os.environ.get(v) for v in ("QNN_RESULTS_DIR", "QNN_CHECKPOINT_DIR")}
    with tempfile.TemporaryDirectory(prefix="qnn-gpu-probe-") as scratch:
        for variable, folder in (("QNN_RESULTS_DIR", "results"), ("QNN_CHECKPOINT_DIR", "checkpoints")):
            os.environ[variable] = str(Path(scratch) / folder)
        try:
            if _qnn_train("probe", [*base, f"train.epochs={PROBE_EPOCHS}"]):
                raise SystemExit("the timing probe failed")
            history = pd.read_csv(Path(scratch) / "results" / "tables" / "probe_history.csv")
        finally:
            for variable, value in saved.items():
                os.environ.pop(variable, None) if value is None else os.environ.__setitem__(variable, value)
    return float(history["seconds"].iloc[1:].max())


def _stamp_commit(record: dict) -> None:
    """The commit named in QNN_SOURCE_COMMIT, where given, is the record's: a device node's
    copy of the checkout may carry no .git, or a stale one (seen: an older commit, read as
    dirty), while the command that sent the checkout knows what it sent."""
    given = os.environ.get("QNN_SOURCE_COMMIT")
    provenance_record = record.get("provenance") or {}
    if given:
        provenance_record["git_on_node"] = {key: provenance_record.get(key) for key in ("commit", "dirty")}
        provenance_record.update(commit=given, dirty=None, commit_from="QNN_SOURCE_COMMIT")


def train_full(args) -> int:
    """The full protocol (1000 epochs): stops itself before `--budget` seconds,
    checkpoints, and resumes when run again."""
    from qnnpipeline import paths

    sets = [*_base_sets(args.dry_run), *(["train.epochs=2"] if args.dry_run else []),
            f"train.max_seconds={args.budget}",
            "train.checkpoint_seconds=120"]
    status = _qnn_train("mnist_paper", sets, paths.checkpoints() / "mnist_paper_resume.pt")
    if status:
        return status
    metrics = json.loads(paths.results("metrics", "mnist_paper.json").read_text())
    done, total = metrics["epochs"], metrics["config"]["epochs"]
    history = pd.read_csv(paths.results("tables", "mnist_paper_history.csv"))
    steps = (metrics["config"]["n_train"] or N_TRAIN) // metrics["config"]["batch_size"]
    epoch_s = float(history["seconds"].median())
    print(f"median epoch {epoch_s:.2f} s: {1e3 * epoch_s / steps:.2f} ms per step, "
          "evaluation of validation and test sets included")
    packed = _pack_model(paths, "mnist_paper")
    print(f"epochs done: {done} of {total}"
          + ("" if done >= total else " - run the same command again to resume")
          + f"; packed model: {packed}")
    return 0


def _pack_model(paths, name: str) -> Path:
    """results/models/NAME_packed.npz: the trained BNN, bit-packed (BinaryMLP)."""
    from qnnlib.deploy import BinaryMLP
    from qnnlib.models import build_model
    from qnnpipeline.runs import load_json

    description = load_json(paths.checkpoints() / f"{name}.json")
    model = build_model(description["model"])
    state = torch.load(paths.checkpoints() / f"{name}.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    target = paths.output("models", f"{name}_packed.npz")
    BinaryMLP.from_torch(model.eval()).save(target)
    return target


if __name__ == "__main__":
    sys.exit(main())
