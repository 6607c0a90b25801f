"""The claims table (results/tables/claims.csv) assembled from metrics and benchmark files.

Notebook 06_runtime_and_energy measures run time, memory and energy and writes them to
results/metrics/06_runtime_and_energy.json; `qnn-train` writes the MNIST runs' metrics;
`make gpu` writes results/benchmarks/gpu_kernels.json and gpu_inference.json. `assemble` reads
nothing itself: it turns those dicts into `claims.claims_table`'s rows; `build` reads the
declared inputs, and `python -m qnnpipeline.claims_table` is the `claims` stage.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from qnnlib.experiments import MIN_SEEDS, t_quantile

from . import paths
from .claims import (GPU_REPORTS, claims_table, gpu_gemm_speedup, gpu_runtime_speedup, is_current,
                     markdown_table, update_readme)
from .runs import error_pct, load_json, load_metrics

__all__ = ["assemble", "build", "main", "versus_published", "RUNTIME", "CPU_RUN", "PAPER_RUN",
           "SHORT_RUN", "SEEDS_RUN"]

RUNTIME, CPU_RUN, PAPER_RUN = "06_runtime_and_energy", "mnist_cpu", "mnist_paper"
SHORT_RUN = "mnist_paper_short"  # `make gpu-train`: the paper's protocol, fewer epochs
SEEDS_RUN = "mnist_seeds"  # the opt-in stage that repeats CPU_RUN over seeds
# The paper's row of the budget net's shape: BNN (Torch7), 3 x 2048 hidden units (Table 1).
SAME_SHAPE_PAPER = ("BNN (Torch7), 3x2048", 1.40)


def versus_published(mean: float, sd: float, n: int, published: float) -> dict:
    """Our mean over `n` seeds minus a published number, with the 95 % t interval of the
    mean (the published value is one number, not a sample), in percentage points."""
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    difference = mean - published
    return {"difference_pct": difference, "ci_low_pct": difference - half,
            "ci_high_pct": difference + half, "n_seeds": n}


def _versus_paper(mean: float, sd: float, n: int) -> str:
    name, published = SAME_SHAPE_PAPER
    versus = versus_published(mean, sd, n, published)
    return (f"vs {name} {published:.2f} %: {versus['difference_pct']:+.2f} points "
            f"(95 % CI {versus['ci_low_pct']:+.2f} to {versus['ci_high_pct']:+.2f})")


def _mnist_rows(metrics: dict, shape: str) -> dict:
    ours = {}
    paper, cpu = metrics.get(PAPER_RUN), metrics.get(CPU_RUN)
    if error_pct(paper) is not None:
        planned = (paper.get("config") or {}).get("epochs", paper["epochs"])
        ours["mnist_error_paper"] = (f"{error_pct(paper):.2f} %",
                                     f"best-validation epoch {paper['best_epoch']}; "
                                     f"{paper['epochs']} of {planned} epochs run")
    short = metrics.get(SHORT_RUN)
    protocol = (short or {}).get("protocol") or {}
    if error_pct(short) is not None and short["epochs"] >= protocol.get("epochs", math.inf):
        gpu = ((short.get("provenance") or {}).get("gpu") or {}).get("gpu", "GPU")
        ours["mnist_error_paper_short"] = (
            f"{error_pct(short):.2f} % (seed {short['config']['seed']}, single run)",
            f"{gpu}, {short['epochs']} of the paper's {protocol['paper_epochs']} epochs, LR decayed "
            f"to lr_end over them; best-validation epoch {short['best_epoch']}")
    if error_pct(cpu) is not None:
        # The headline is the mean over seeds; one seed alone is a single run.
        seed = (cpu.get("config") or {}).get("seed", 0)
        text = f"{error_pct(cpu):.2f} % (seed {seed}, single run)"
        setting = f"{shape}, {cpu['epochs']} epochs, best-validation epoch {cpu['best_epoch']}"
        repeated = ((metrics.get(SEEDS_RUN) or {}).get("runs") or {}).get(CPU_RUN)
        if repeated and repeated["n_seeds"] >= 2 and is_current(metrics.get(SEEDS_RUN), CPU_RUN, cpu):
            mean, sd, n = (repeated[key] for key in ("test_error_pct_mean", "test_error_pct_sd", "n_seeds"))
            text = f"{mean:.2f} ± {sd:.2f} % over {n} seeds (seed {seed}: {error_pct(cpu):.2f} %)"
            setting += f" (seed {seed})"
            if n >= MIN_SEEDS:  # a comparison the table states needs the project's minimum of seeds
                setting += f"; {_versus_paper(mean, sd, n)}"
        ours["mnist_error_cpu"] = (text, setting)
    return ours


def _gpu_rows(benchmarks: dict) -> dict:
    ours = {}
    gemm = gpu_gemm_speedup(benchmarks.get("gpu_kernels"))
    if gemm is not None:
        setting = f"{gemm['gpu']}, {gemm['variant'].replace('_', '-')} kernel, 8192^3"
        ours["gemm_vs_cublas"] = (f"{gemm['vs_cublas']:.1f}x faster", setting + ", TF32 off")
        if gemm["vs_unoptimised"]:
            ours["gemm_vs_unoptimised"] = (f"{gemm['vs_unoptimised']:.1f}x faster",
                                           setting + ", vs a one-thread-per-output float32 kernel")
    runtime = gpu_runtime_speedup(benchmarks.get("gpu_inference"))
    if runtime is not None:
        ours["mnist_runtime_gpu"] = (f"{runtime['vs_unoptimised']:.1f}x faster",
                                     f"{runtime['gpu']}, {runtime['images']} test images, labels agree; "
                                     f"{runtime['vs_cublas']:.1f}x vs the float network on cuBLAS")
    return ours


def _runtime_rows(runtime: dict) -> dict:
    shape, threads = runtime["network"]["shape"], runtime["threads"]
    kernel = {int(key[len("n_"):]): value for key, value in runtime["cpu_kernel_speedup"].items()}
    speed = {int(key[len("batch_"):]): value for key, value in runtime["cpu_speedup"].items()}
    memory, energy = runtime["weight_memory"], runtime["energy_model"]
    largest = max(kernel)
    kernel_range = runtime.get("cpu_kernel_speedup_range", {}).get(f"n_{largest}")
    speed_range = runtime.get("cpu_speedup_range", {})
    spread = (lambda r: f" ({r[0]:.1f}-{r[1]:.1f})" if r else "")  # min-max over the race's rounds
    rounds = (runtime.get("speed_repeats") or {})
    return {
        "gemm_cpu": (f"{kernel[largest]:.1f}x{spread(kernel_range)} faster",
                     f"{largest}^3, {threads} thread(s), vs torch.matmul float32 (notebook 06)"
                     + (f"; median (min-max) of {rounds['kernel']} interleaved rounds" if rounds else "")),
        "mnist_runtime_cpu": (" / ".join(f"{s:.1f}x{spread(speed_range.get(f'batch_{b}'))}" for b, s in speed.items())
                              + " faster",
                              f"batch {' / '.join(map(str, speed))}, {shape} BNN, {threads} thread(s), vs torch float32"
                              + (f"; median (min-max) of {rounds['inference']} interleaved rounds" if rounds else "")),
        "weight_memory": (f"{memory['float_file_bytes'] / memory['packed_file_bytes']:.1f}x less",
                          f"saved files: {memory['float_file_bytes'] / 1e6:.1f} MB float32 state dict -> "
                          f"{memory['packed_file_bytes'] / 1e6:.2f} MB packed ({shape})"),
        "energy": (f"{energy['ratio_total']:.0f}x less (modelled)",
                   f"{energy['network']}, batch {energy['batch_size']}: arithmetic (Horowitz 45 nm) plus one "
                   f"DRAM access ({energy['dram_pj'] / 1000:g} nJ) per 64-bit weight word, which dominates; "
                   f"arithmetic alone {energy['ratio_arithmetic']:.0f}x (qnnlib.energy)"),
    }


def assemble(metrics: dict[str, dict | None], benchmarks: dict[str, dict | None]) -> pd.DataFrame:
    """The claims table (`claims.claims_table`) from loaded JSON files.

    metrics: name -> results/metrics/<name>.json as a dict (None when absent); it needs
        `RUNTIME` (notebook 06) and reads `CPU_RUN` and `PAPER_RUN` when present.
    benchmarks: name -> results/benchmarks/<name>.json (None when absent); it reads
        "gpu_kernels" and "gpu_inference" (`make gpu`) when present. Claims without a number read as pending.
    """
    runtime = metrics.get(RUNTIME)
    if not runtime:
        raise KeyError(f"the claims table needs results/metrics/{RUNTIME}.json (notebook 06)")
    ours = {**_mnist_rows(metrics, runtime["network"]["shape"]),
            **_gpu_rows(benchmarks), **_runtime_rows(runtime)}
    return claims_table(ours)


def build(write: bool = True) -> pd.DataFrame:
    """The claims table from results/metrics/ and results/benchmarks/ (the `claims` stage);
    written to results/tables/claims.csv when `write`."""
    metrics = {name: load_metrics(name) for name in (RUNTIME, CPU_RUN, PAPER_RUN, SHORT_RUN, SEEDS_RUN)}
    benchmarks = {name: load_json(paths.results("benchmarks", f"{name}.json")) for name in GPU_REPORTS}
    table = assemble(metrics, benchmarks)
    if write:
        table.to_csv(paths.output("tables", "claims.csv"), index=False)
    return table


def main(argv=None) -> None:
    """`python -m qnnpipeline.claims_table`: write results/tables/claims.csv and print it as
    markdown; `--update-readme README.md` copies the table into the README instead."""
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--update-readme", type=Path, metavar="README",
                        help="rewrite the table between the claims markers of this file "
                             "from results/tables/claims.csv")
    args = parser.parse_args(argv)
    if args.update_readme:
        csv = paths.results("tables", "claims.csv")
        if not csv.is_file():
            parser.error(f"{paths.relative(csv)} not found: run `dvc repro claims` first")
        readme = args.update_readme
        table_markdown = markdown_table(pd.read_csv(csv, keep_default_na=False))
        readme.write_text(update_readme(readme.read_text(), table_markdown))
        print(f"updated {readme}")
        return
    print(markdown_table(build()), end="")


if __name__ == "__main__":
    main()
