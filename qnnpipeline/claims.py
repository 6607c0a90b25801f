"""The paper's headline claims beside this replication's numbers (results/tables/claims.csv).

What each claim is (claims.yaml), how a benchmark report is read, and the table's
markdown. One stage (`python -m qnnpipeline.claims_table`) builds the table from the
metrics and benchmark JSON files; a claim nobody has measured yet says so ("pending
(needs GPU)") instead of showing a number. `make repro` then copies it into the README
between the `<!-- claims:start -->` and `<!-- claims:end -->` markers
(`--update-readme README.md`), and a test fails when the two disagree. This module
imports nothing of `claims_table`, which builds on it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .params import load_yaml
from .runs import load_json, load_metrics, load_run, error_pct  # noqa: F401 (notebooks read runs here)

__all__ = ["PENDING_GPU", "CLAIMS", "COLUMNS", "load_json", "load_metrics", "load_run", "error_pct",
           "is_current", "gpu_gemm_speedup", "gpu_runtime_speedup", "claims_table", "markdown_table",
           "update_readme"]

PENDING_GPU = "pending (needs GPU)"
# What `make gpu` writes into results/benchmarks/ (committed as "pending" placeholders until
# then); the CPU benchmark scripts' reports there describe one machine and are not committed.
GPU_REPORTS = ("gpu_kernels", "gpu_inference")
COLUMNS = ["claim", "paper", "ours", "setting", "command"]
README_START, README_END = "<!-- claims:start -->", "<!-- claims:end -->"

# id -> what the paper claims, its number, our column before any measurement, the command.
CLAIMS = load_yaml(Path(__file__).with_name("claims.yaml").read_text())  # duplicate ids refused


def is_current(seeds_metrics: dict | None, run: str, run_metrics: dict | None) -> bool:
    """Whether a seeds summary (`qnnpipeline.seeds`) still describes `run` as its stage last
    trained it: the own-seed result the summary read (errors, epochs, training config) is
    the run's current result. A retrained run makes the summary stale."""
    own = (((seeds_metrics or {}).get("runs") or {}).get(run) or {}).get("own_seed")
    if not own or run_metrics is None:
        return False
    return all(run_metrics.get(key) == value for key, value in own.items())


def measured_on_gpu(report: dict | None) -> bool:
    """A GPU benchmark report (`make gpu`) that ran on a device, not a dry run."""
    return bool(report) and report.get("backend") == "cuda" and not report.get("dry_run")


def gpu_name(report: dict) -> str:
    return ((report.get("provenance") or {}).get("gpu") or {}).get("gpu") or "GPU"


def gpu_gemm_row(report: dict | None, shape: str = "8192^3") -> dict | None:
    """The row of results/benchmarks/gpu_kernels.json for `shape`, with the fastest exact
    XNOR kernel as {"xnor_ms", "variant"}; None before `make gpu` has run on a GPU."""
    if not measured_on_gpu(report):
        return None
    for row in report.get("shapes") or []:
        if row.get("shape") != shape:
            continue
        exact = row.get("exact") or {}
        times = {variant: row.get(f"xnor_{variant}_ms") for variant in ("cuda_core", "tensor_core")}
        times = {v: t for v, t in times.items() if t and exact.get(f"xnor_{v}", True)}
        if not times:
            return None
        variant = min(times, key=times.get)
        return {**row, "xnor_ms": times[variant], "variant": variant, "gpu": gpu_name(report)}
    return None


def gpu_gemm_speedup(report: dict | None) -> dict | None:
    """The fastest XNOR kernel against cuBLAS SGEMM (TF32 off) and against the
    unoptimised float32 kernel at 8192^3: {"vs_cublas", "vs_unoptimised", "variant", "gpu"}."""
    row = gpu_gemm_row(report)
    if row is None:
        return None
    return {"vs_cublas": row["cublas_sgemm_ms"] / row["xnor_ms"],
            "vs_unoptimised": (row["naive_float_ms"] / row["xnor_ms"]) if row.get("naive_float_ms") else None,
            "variant": row["variant"], "gpu": row["gpu"]}


def gpu_runtime_speedup(report: dict | None) -> dict | None:
    """The MNIST BNN on the GPU against the same float32 network with the unoptimised
    kernel (results/benchmarks/gpu_inference.json), only when every label agrees."""
    if not measured_on_gpu(report) or not report.get("all_agree"):
        return None
    return {"vs_unoptimised": report["bnn_vs_float_naive"], "vs_cublas": report["bnn_vs_float_cublas"],
            "images": report["images"], "gpu": gpu_name(report)}


def claims_table(ours: dict) -> pd.DataFrame:
    """One row per claim of `CLAIMS`, in order; `ours` maps a claim id to (value, setting).
    Claims without a value read as their `pending` text (e.g. "pending (needs GPU)")."""
    unknown = sorted(set(ours) - set(CLAIMS))
    if unknown:
        raise KeyError(f"unknown claim ids {unknown}; known: {list(CLAIMS)}")
    rows = []
    for key, claim in CLAIMS.items():
        value, setting = ours.get(key) or (None, "")
        rows.append({"claim": claim["claim"], "paper": claim["paper"],
                     "ours": claim["pending"] if value is None else str(value),
                     "setting": setting, "command": claim["command"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table; the command column in backticks."""
    def cell(column, value):
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return f"`{text}`" if column == "command" and text else text

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"


def update_readme(text: str, table_markdown: str) -> str:
    """`text` with everything between the claims markers replaced by `table_markdown`."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README has no {README_START} ... {README_END} block")
    return text[:start + len(README_START)] + "\n" + table_markdown + text[end:]
