"""Training-step time of the paper's MNIST BNN against its full-precision twin.

One step = forward + squared hinge loss + backward + Adam step (+ clipping the real
weights to [-1, 1] for the BNN, as `qnnlib.training.train_step` does; the twin is not
clipped, as in the authors' full-precision baseline). Batch 100, 784-4096x3-10 by
default. `qnnlib.timing.race` times the two models in alternation (BNN, twin, BNN, twin,
...) so that drift in machine load hits both alike; the ratio of medians is the number
recorded. Goal: BNN step <= 1.3x the twin's (binarization should cost little next to the
GEMMs). The machine is described by `qnnlib.provenance.provenance`.

    python benchmarks/train_step.py [--hidden 4096] [--repeats 20] [--devices cpu cuda] [--quick]

Writes results/benchmarks/train_step.json (one entry per device, with the machine).

    python benchmarks/train_step.py --numerics [--hidden 2048] [--repeats 20]

measures instead what the pinned numerics cost (README, "Reproducibility"): the budget
nets' training step (784-2048x3-10, batch 100, one thread) in two worker processes, one
with the pinned profile and one native (the settings apply per process), their steps
timed in alternation, and a fourth worker with the pinned profile whose nets compute their
products with the ordered kernel (`model.matmul: ordered`, `qnnlib.ordered_matmul`).
s/epoch is derived as 500 steps (50,000 images / batch 100) times the median step,
evaluation left out. Writes results/reproducibility/numerics_cost.json
(committed: the README quotes it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from qnnlib import numerics
from qnnlib.layers import squared_hinge_loss
from qnnlib.models import full_precision_mlp, mnist_mlp, quant_linears
from qnnlib.provenance import provenance
from qnnlib.timing import race
from qnnlib.training import make_optimizer, seed_everything, train_step

GOAL_RATIO = 1.3
OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "train_step.json"
NUMERICS_OUT = OUT.parents[1] / "reproducibility" / "numerics_cost.json"
STEPS_PER_EPOCH = 50_000 // 100
# The settings compared: the pinned profile, each library's default, and the rejected
# candidate (MKL's AVX2 branch: free, but on non-Intel CPUs MKL runs AUTO instead).
CANDIDATES = {"portable": numerics.PROFILES["portable"], "native": {},
              "avx2-branch": {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2",
                              "ONEDNN_MAX_CPU_ISA": "AVX2"},
              "portable-ordered": numerics.PROFILES["portable"]}
MATMUL = {"portable-ordered": "ordered"}  # the products' kernel per candidate (default torch)


def make_stepper(model, device, batch_size, clip):
    """A closure doing one training step on a fixed random batch."""
    model.to(device).train()
    optimizer = make_optimizer(model, lr=1e-3)
    inputs = torch.rand(batch_size, 784, device=device) * 2 - 1
    labels = torch.randint(0, 10, (batch_size,), device=device)
    clip_layers = quant_linears(model) if clip else []

    def step():
        train_step(model, optimizer, inputs, labels, squared_hinge_loss, clip_layers)
    return step


def measure(device, hidden, depth, batch_size, repeats, steps, warmup) -> dict:
    """Interleaved repetitions of BNN and twin; medians and their ratio."""
    seed_everything(0)
    bnn = make_stepper(mnist_mlp(hidden=hidden, depth=depth), device, batch_size, clip=True)
    twin = make_stepper(full_precision_mlp(hidden=hidden, depth=depth), device, batch_size, clip=False)
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    timed = race({"bnn": bnn, "twin": twin}, repeats, calls=steps, warmup=warmup, synchronize=synchronize)
    bnn_times, twin_times = timed["bnn"].samples_s, timed["twin"].samples_s
    bnn_ms, twin_ms = 1e3 * timed["bnn"].median_s, 1e3 * timed["twin"].median_s
    return {
        "device": str(device),
        "machine": provenance(threads=torch.get_num_threads()) | {"load_average_1min": round(os.getloadavg()[0], 2)},
        "net": f"784-{hidden}x{depth}-10", "batch_size": batch_size,
        "repeats": repeats, "steps_per_repeat": steps,
        "bnn_ms_median": round(bnn_ms, 3), "twin_ms_median": round(twin_ms, 3),
        "bnn_ms_best": round(1e3 * min(bnn_times), 3), "twin_ms_best": round(1e3 * min(twin_times), 3),
        "ratio_median": round(bnn_ms / twin_ms, 3),
        "ratio_best": round(min(bnn_times) / min(twin_times), 3),
        "goal_ratio": GOAL_RATIO, "meets_goal": bnn_ms / twin_ms <= GOAL_RATIO,
    }


def serve_steps(kind: str, hidden: int, matmul: str = "torch") -> None:
    """Worker: build the net, then one training step per line read from stdin."""
    torch.set_num_threads(1)
    seed_everything(0)
    build = mnist_mlp if kind == "bnn" else full_precision_mlp
    model = build(hidden=hidden, matmul=matmul)
    step = make_stepper(model, torch.device("cpu"), 100, clip=kind == "bnn")
    print(json.dumps(numerics.settings()), flush=True)
    for _ in sys.stdin:
        step()
        print("ok", flush=True)


class StepWorker:
    """A worker process with the settings `CANDIDATES[name]`; calling it runs one step there."""

    def __init__(self, name: str, kind: str, hidden: int):
        env = {key: value for key, value in os.environ.items()
               if key not in numerics.PROFILES["portable"]}
        env |= {numerics.ENV: "portable" if name.startswith("portable") else "native", **CANDIDATES[name]}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--hidden", str(hidden),
             "--matmul", MATMUL.get(name, "torch")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
        self.settings = json.loads(self.process.stdout.readline())

    def __call__(self):
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        self.process.stdout.readline()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def measure_numerics(hidden: int, repeats: int) -> dict:
    """Step time of the budget BNN and its control under each of `CANDIDATES`, in alternation."""
    start = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    report = {"net": f"784-{hidden}x3-10", "batch_size": 100, "threads_per_process": 1,
              "steps_per_epoch": STEPS_PER_EPOCH, "rounds": repeats, "steps_per_round": 5}
    for kind in ("bnn", "full_precision"):
        workers = {name: StepWorker(name, kind, hidden) for name in CANDIDATES}
        try:
            timed = race(workers, repeats, calls=report["steps_per_round"], warmup=3)
        finally:
            for worker in workers.values():
                worker.close()
        entry = {profile: {"numerics": workers[profile].settings, "matmul": MATMUL.get(profile, "torch"),
                           "ms_per_step": {"min": round(1e3 * min(t.samples_s), 2),
                                           "median": round(1e3 * t.median_s, 2),
                                           "max": round(1e3 * max(t.samples_s), 2)},
                           "s_per_epoch_derived": round(STEPS_PER_EPOCH * t.median_s, 1)}
                 for profile, t in timed.items()}
        for name in CANDIDATES:
            entry[name]["over_native"] = round(timed[name].median_s / timed["native"].median_s, 3)
        report[kind] = entry
        print(f"{kind}: " + ", ".join(f"{name} {entry[name]['ms_per_step']['median']} ms/step "
                                      f"(x{entry[name]['over_native']})" for name in CANDIDATES))
    # provenance last, so that its commit and dirty state are those the run ended with
    report["machine"] = provenance(threads=1, wall_seconds=time.perf_counter() - start) | {
        "load_average_1min": load_before}
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps timed per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help=f"default {OUT.name}, or with --numerics {NUMERICS_OUT.name}")
    parser.add_argument("--quick", action="store_true", help="hidden 256, 3 rounds of 2 steps")
    parser.add_argument("--numerics", action="store_true",
                        help="pinned vs native numerics on the budget nets (hidden 2048 unless given)")
    parser.add_argument("--worker", choices=["bnn", "full_precision"], help=argparse.SUPPRESS)
    parser.add_argument("--matmul", default="torch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return serve_steps(args.worker, args.hidden, args.matmul)
    if args.numerics:
        hidden = args.hidden if args.hidden != 4096 else 2048
        report = measure_numerics(256 if args.quick else hidden, 2 if args.quick else args.repeats)
        out = args.out or NUMERICS_OUT
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
        return report
    if args.quick:
        args.hidden, args.repeats, args.steps, args.warmup = 256, 3, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {}
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            report["cuda"] = {"skipped": "no CUDA device"}
            continue
        result = measure(torch.device(name), args.hidden, args.depth, args.batch_size,
                         args.repeats, args.steps, args.warmup)
        report[name] = result
        print(f"{name}: BNN {result['bnn_ms_median']:.2f} ms, twin {result['twin_ms_median']:.2f} ms, "
              f"ratio {result['ratio_median']:.2f} (goal <= {GOAL_RATIO})")
    out = args.out or OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
