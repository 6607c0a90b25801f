"""qnnpipeline.claims_table.assemble: the claims table from metrics and benchmark dicts,
checked against rows written out by hand."""
import pytest

from qnnpipeline import claims
from qnnpipeline.claims_table import assemble

RUNTIME = {
    "threads": 2,
    "network": {"layers": [[784, 2048], [2048, 2048], [2048, 2048], [2048, 10]], "shape": "3 x 2048"},
    "cpu_kernel_speedup": {"n_256": 11.4, "n_2048": 48.0},
    "cpu_speedup": {"batch_1": 47.7, "batch_100": 27.4, "batch_10000": 23.7},
    "weight_memory": {"float_file_bytes": 40190419, "packed_file_bytes": 1293274, "ratio": 31.08},
    "energy_model": {"network": "784-3x4096-10 (paper)", "batch_size": 1, "dram_pj": 1300.0,
                     "ratio_total": 31.88, "ratio_arithmetic": 262.4},
}
CPU_RUN = {"test_error": 0.0182, "best_epoch": 23, "epochs": 25}
GEMM = {"backend": "cuda", "dry_run": False, "provenance": {"gpu": {"gpu": "NVIDIA H200", "capability": "9.0"}},
        "shapes": [{"shape": "8192^3", "cublas_sgemm_ms": 10.0, "naive_float_ms": 230.0,
                    "xnor_cuda_core_ms": 4.0, "xnor_tensor_core_ms": 2.5}]}


def ours(table):
    return dict(zip(table["claim"], zip(table["ours"], table["setting"])))


def test_assemble_writes_every_measured_claim():
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_cpu": CPU_RUN, "mnist_paper": None},
                     {"gpu_kernels": GEMM})
    assert list(table.columns) == claims.COLUMNS and len(table) == len(claims.CLAIMS)
    rows = ours(table)
    text = {key: rows[spec["claim"]] for key, spec in claims.CLAIMS.items()}
    assert text["mnist_error_paper"] == (claims.PENDING_GPU, "")
    assert text["mnist_error_cpu"] == ("1.82 % (seed 0, single run)", "3 x 2048, 25 epochs, best-validation epoch 23")
    assert text["gemm_vs_cublas"] == ("4.0x faster", "NVIDIA H200, tensor-core kernel, 8192^3, TF32 off")
    assert text["gemm_vs_unoptimised"] == (
        "92.0x faster", "NVIDIA H200, tensor-core kernel, 8192^3, vs a one-thread-per-output float32 kernel")
    assert text["gemm_cpu"] == ("48.0x faster", "2048^3, 2 thread(s), vs torch.matmul float32 (notebook 06)")
    assert text["mnist_runtime_cpu"] == (
        "47.7x / 27.4x / 23.7x faster", "batch 1 / 100 / 10000, 3 x 2048 BNN, 2 thread(s), vs torch float32")
    assert text["weight_memory"] == (
        "31.1x less", "saved files: 40.2 MB float32 state dict -> 1.29 MB packed (3 x 2048)")
    assert text["energy"] == ("32x less (modelled)", "784-3x4096-10 (paper), batch 1: arithmetic "
                              "(Horowitz 45 nm) plus one DRAM access (1.3 nJ) per 64-bit weight word, "
                              "which dominates; arithmetic alone 262x (qnnlib.energy)")
    assert text["mnist_runtime_gpu"] == (claims.PENDING_GPU, "")


def test_the_cpu_row_adds_the_seeds_mean_and_sd():
    cpu = {**CPU_RUN, "best_val_error": 0.0168, "config": {"seed": 0}}
    own_seed = {key: cpu[key] for key in ("test_error", "best_val_error", "best_epoch", "epochs", "config")}
    seeds = {"runs": {"mnist_cpu": {"n_seeds": 3, "test_error_pct_mean": 1.5, "test_error_pct_sd": 0.061,
                                    "own_seed": own_seed}}}
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_cpu": cpu, "mnist_seeds": seeds}, {})
    row = ours(table)[claims.CLAIMS["mnist_error_cpu"]["claim"]]
    # the headline is the mean over seeds, not seed 0
    assert row[0] == "1.50 ± 0.06 % over 3 seeds (seed 0: 1.82 %)"
    # vs the paper's same-shape row (Torch7, 1.40 %): +0.10, 95 % CI +-t(0.975, 2) * 0.061 / sqrt(3)
    assert row[1].endswith("vs BNN (Torch7), 3x2048 1.40 %: +0.10 points (95 % CI -0.05 to +0.25)")
    # seeds summarised before the run was retrained with other settings: left out
    retrained = {**cpu, "test_error": 0.0150, "config": {"seed": 0, "epochs": 20}}
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_cpu": retrained, "mnist_seeds": seeds}, {})
    assert ours(table)[claims.CLAIMS["mnist_error_cpu"]["claim"]][0] == "1.50 % (seed 0, single run)"


def test_paper_run_and_missing_benchmarks():
    paper = {"test_error": 0.0093, "best_epoch": 980, "epochs": 1000}
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_cpu": None, "mnist_paper": paper},
                     {"gpu_kernels": None})
    text = {key: ours(table)[spec["claim"]] for key, spec in claims.CLAIMS.items()}
    assert text["mnist_error_paper"] == ("0.93 %", "best-validation epoch 980; 1000 of 1000 epochs run")
    partial = {**paper, "epochs": 950, "best_epoch": 949, "config": {"epochs": 1000}}
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_paper": partial}, {})
    assert ours(table)[claims.CLAIMS["mnist_error_paper"]["claim"]][1] == (
        "best-validation epoch 949; 950 of 1000 epochs run")
    assert text["mnist_error_cpu"][0] == "not run"
    assert text["gemm_vs_cublas"][0] == claims.PENDING_GPU
    assert text["mnist_error_paper_short"][0] == claims.PENDING_GPU


def test_shortened_paper_protocol_row():
    short = {"test_error": 0.0106, "best_epoch": 432, "epochs": 468, "config": {"seed": 0, "epochs": 468},
             "protocol": {"name": "shortened paper protocol", "epochs": 468, "paper_epochs": 1000},
             "provenance": {"gpu": {"gpu": "NVIDIA H200"}}}
    row = claims.CLAIMS["mnist_error_paper_short"]["claim"]
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_paper_short": short}, {})
    assert ours(table)[row] == ("1.06 % (seed 0, single run)", "NVIDIA H200, 468 of the paper's 1000 "
                                "epochs, LR decayed to lr_end over them; best-validation epoch 432")
    # cut by its time budget: not the planned protocol, so no number
    table = assemble({"06_runtime_and_energy": RUNTIME, "mnist_paper_short": {**short, "epochs": 400}}, {})
    assert ours(table)[row][0] == claims.PENDING_GPU


def test_assemble_needs_notebook_06():
    with pytest.raises(KeyError, match="06_runtime_and_energy"):
        assemble({"mnist_cpu": CPU_RUN}, {})


def test_speed_rows_give_the_median_and_the_range_over_rounds():
    runtime = {**RUNTIME, "cpu_speedup_range": {"batch_1": [18.5, 25.8], "batch_100": [27.0, 28.1],
                                                "batch_10000": [23.0, 24.4]},
               "cpu_kernel_speedup_range": {"n_256": [10.0, 12.0], "n_2048": [45.2, 49.9]},
               "speed_repeats": {"inference": 3, "kernel": 5}}
    text = {key: ours(assemble({"06_runtime_and_energy": runtime}, {}))[spec["claim"]]
            for key, spec in claims.CLAIMS.items()}
    assert text["mnist_runtime_cpu"] == (
        "47.7x (18.5-25.8) / 27.4x (27.0-28.1) / 23.7x (23.0-24.4) faster",
        "batch 1 / 100 / 10000, 3 x 2048 BNN, 2 thread(s), vs torch float32; median (min-max) of 3 interleaved rounds")
    assert text["gemm_cpu"] == ("48.0x (45.2-49.9) faster", "2048^3, 2 thread(s), vs torch.matmul float32 "
                                "(notebook 06); median (min-max) of 5 interleaved rounds")
