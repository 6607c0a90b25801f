"""End-to-end MNIST inference: bit-packed BinaryMLP vs the same network in torch fp32.

Network: the paper's 784-4096x3-10 BNN (`qnnlib.models.mnist_mlp()`), random weights
(speed and size do not depend on training), batch-norm running statistics set from one
pass over the inputs so that thresholds are realistic.

Baseline: the same model in torch float32, eval mode, `torch.inference_mode`, with the
binarized weights materialised once (a QuantLinear re-binarizes all 37 M weights on
every call, which would flatter the bit-packed model). Both get the same thread count.

Timing: `qnnlib.timing.race` alternates both models in one process (torch, bnn, torch,
bnn, ...), so load from other processes hits both alike; we report best-of-n and the
median. A sample repeats a call until it lasts `--min-sample-s` (many calls at batch 1).
The machine is described by `qnnlib.provenance.provenance`.

    python benchmarks/inference.py [--threads 2] [--repeats 7] [--quick] [--out PATH]

Writes results/benchmarks/inference.json and prints a table. `--quick`: a narrow network
and small batches, to check that the script works.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from qnnlib.deploy import BinaryMLP
from qnnlib.layers import QuantLinear
from qnnlib.models import mnist_mlp
from qnnlib.provenance import provenance
from qnnlib.quantizers import Identity
from qnnlib.timing import race

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "inference.json"
GOALS = {1: 50.0, 100: 25.0, 10000: 20.0}  # speed-up goals per batch size


def float_twin(model: torch.nn.Sequential) -> torch.nn.Sequential:
    """The same network with sign(W) stored as plain float32 weights (no per-call binarization)."""
    twin = copy.deepcopy(model).eval()
    with torch.no_grad():
        for layer in twin:
            if isinstance(layer, QuantLinear):
                layer.weight.copy_(torch.where(layer.weight >= 0, 1.0, -1.0))
                layer.weight_quantizer = Identity()
    return twin


def benchmark_images(n: int, seed: int) -> tuple[np.ndarray, str]:
    """n MNIST test images (cycled) if a local copy or mirror is at hand, else random pixels."""
    try:
        from qnnlib.data import load_mnist

        test = load_mnist(root=OUT.parents[2] / "data", download=False)["test"].images.numpy()
        source = "MNIST test images"
    except Exception:  # any missing or damaged data: timing does not depend on pixel values
        test = np.random.default_rng(seed).integers(0, 256, (10000, 28, 28), dtype=np.uint8)
        source = "random uint8 images (MNIST not found)"
    return test[np.arange(n) % len(test)], source


def calibrated_model(images: np.ndarray, seed: int, hidden: int = 4096) -> torch.nn.Sequential:
    """mnist_mlp(hidden) with running statistics equal to the batch statistics of `images`."""
    torch.manual_seed(seed)
    model = mnist_mlp(hidden=hidden)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.momentum = None  # cumulative average: one pass sets the batch statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images[:1000]).reshape(-1, 784).float() * (2 / 255) - 1)
    return model.eval()


def file_bytes(save, suffix: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model{suffix}"
        save(path)
        return path.stat().st_size


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-sample-s", type=float, default=0.02,
                        help="a sample repeats a call until it lasts this long")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 100, 10000])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="hidden 256, batches 1 and 100, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.batches, args.repeats = 256, [1, 100], 3

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]  # other processes on the machine: timings share the cores
    images, source = benchmark_images(max(args.batches + [1000]), args.seed)
    model = calibrated_model(images, args.seed, args.hidden)
    twin = float_twin(model)
    bnn = BinaryMLP.from_torch(model)
    bnn.threads = args.threads

    rows = []
    for batch in args.batches:
        pixels = images[:batch]
        inputs = torch.from_numpy(pixels).reshape(batch, -1).float() * (2 / 255) - 1

        def run_torch():
            with torch.inference_mode():
                return twin(inputs)

        def run_bnn():
            return bnn.scores(pixels)

        agree = float(np.mean(run_torch().argmax(1).numpy() == bnn.predict(pixels)))
        timed = race({"torch": run_torch, "bnn": run_bnn}, args.repeats, args.min_sample_s)
        timing = {name: t.to_dict() for name, t in timed.items()}
        speedup = timed["torch"].best_s / timed["bnn"].best_s
        speedup_median = timed["torch"].median_s / timed["bnn"].median_s
        rows.append({"batch": batch, **timing, "speedup_best": speedup,
                     "speedup_median": speedup_median, "goal": GOALS.get(batch),
                     "label_agreement": agree})

    float_bytes = file_bytes(lambda p: torch.save(model.state_dict(), p), ".pt")
    packed_bytes = file_bytes(bnn.save, ".npz")
    report = {
        "network": f"784-{args.hidden}x3-10 BNN (qnnlib.models.mnist_mlp), random weights",
        "inputs": source, "threads": args.threads, "repeats": args.repeats,
        "baseline": "torch float32, eval, inference_mode, binarized weights materialised",
        "machine": {**provenance(threads=args.threads),
                    "torch_blas": "MKL" if torch.backends.mkl.is_available() else "other",
                    "load_average_1min_start": load_start, "load_average_1min_end": os.getloadavg()[0]},
        "results": rows,
        "memory": {"float_state_dict_file_bytes": float_bytes, "packed_file_bytes": packed_bytes,
                   "packed_nbytes": bnn.nbytes, "ratio": float_bytes / packed_bytes},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")
    return report


def print_table(report: dict) -> None:
    print(f"{report['network']}; {report['threads']} threads; {report['machine']['cpu']}; "
          f"load average {report['machine']['load_average_1min_start']:.1f}")
    print(f"{'batch':>6} {'torch ms':>10} {'bnn ms':>10} {'speed-up':>9} {'(median)':>9} {'goal':>6} {'agree':>6}")
    for row in report["results"]:
        print(f"{row['batch']:>6} {row['torch']['best_s'] * 1e3:>10.3f} {row['bnn']['best_s'] * 1e3:>10.3f} "
              f"{row['speedup_best']:>8.1f}x {row['speedup_median']:>8.1f}x {row['goal'] or 0:>5.0f}x "
              f"{row['label_agreement']:>6.3f}")
    memory = report["memory"]
    print(f"weights on disk: float state dict {memory['float_state_dict_file_bytes'] / 1e6:.1f} MB, "
          f"packed {memory['packed_file_bytes'] / 1e6:.2f} MB ({memory['ratio']:.1f}x smaller)")


if __name__ == "__main__":
    main()
