"""XNOR-popcount GEMM vs float32 matmul, CPU (and GPU where CuPy sees one).

CPU: `pack_bits(activations)` + `xnor_gemm` (weights packed and `prepare_weights`-ed
once, as at deployment) against `torch.matmul` in float32, with the same thread count on
both sides; `xnor_unprepared_ms` passes plain packed weights, rearranged on every call.
GPU: the CuPy kernels against cuBLAS SGEMM and TF32. All timings come from
`qnnlib.timing.race` (the compared functions in alternation; best and median per call);
the machine is described by `qnnlib.provenance.provenance`.

    python benchmarks/xnor_gemm.py [--repeats 20] [--threads N] [--out PATH] [--quick]

`--quick` times small shapes only, to check that the script works (seconds, not minutes).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numba
import numpy as np
import torch

from qnnlib.bitpack import pack_bits
from qnnlib.kernels import cpu, prepare_weights, xnor_gemm
from qnnlib.provenance import provenance
from qnnlib.timing import race

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "xnor_gemm.json"
# (M, K, N) and the speed-up over fp32 matmul this replication aims for.
CPU_SHAPES = {(1, 4096, 4096): 50, (100, 4096, 4096): 25, (1000, 4096, 4096): 20, (100, 784, 4096): 25}
QUICK_CPU_SHAPES = {(100, 1024, 1024): 10}
GPU_SIZES, QUICK_GPU_SIZES = (4096, 8192), (1024,)
# The paper's "unoptimised kernel" baseline ("Seven times faster on GPU at run-time": 23x), as a CPU analogue: the textbook
# float32 triple loop, compiled, parallel over rows, without blocking or packing.
NAIVE_SHAPE, QUICK_NAIVE_SHAPE = (100, 4096, 4096), (10, 1024, 1024)


@numba.njit(parallel=True, cache=True)
def naive_matmul(a, b_t):
    m, k = a.shape
    out = np.zeros((m, b_t.shape[0]), np.float32)
    for i in numba.prange(m):
        for j in range(b_t.shape[0]):
            total = np.float32(0.0)
            for p in range(k):
                total += a[i, p] * b_t[j, p]
            out[i, j] = total
    return out


def naive_case(m, k, n, repeats, rng):
    """XNOR GEMM against the unoptimised float32 kernel, interleaved."""
    activations = rng.standard_normal((m, k), dtype=np.float32)
    weights = rng.standard_normal((n, k), dtype=np.float32)
    prepared = prepare_weights(pack_bits(weights))
    timed = race({"xnor": lambda: xnor_gemm(pack_bits(activations), prepared, k),
                  "naive": lambda: naive_matmul(activations, weights)}, repeats=min(repeats, 3))
    xnor, naive = timed["xnor"].best_s, timed["naive"].best_s
    return {"M": m, "K": k, "N": n, "xnor_ms": xnor * 1e3, "naive_fp32_ms": naive * 1e3,
            "speedup": naive / xnor, "paper_speedup_gpu": 23}


def cpu_case(m, k, n, repeats, rng):
    activations = rng.standard_normal((m, k), dtype=np.float32)
    weights = rng.standard_normal((n, k), dtype=np.float32)
    weight_bits = pack_bits(weights)
    prepared = prepare_weights(weight_bits)
    out = np.empty((m, n), np.int32)
    x, w = torch.from_numpy(activations), torch.from_numpy(weights)
    timed = race({"xnor": lambda: xnor_gemm(pack_bits(activations), prepared, k, out=out),
                  "torch": lambda: torch.matmul(x, w.T),
                  "xnor_unprepared": lambda: xnor_gemm(pack_bits(activations), weight_bits, k, out=out)},
                 repeats=repeats, min_sample_s=0.02)
    xnor, dense = timed["xnor"].best_s, timed["torch"].best_s
    return {
        "M": m, "K": k, "N": n,
        "xnor_ms": xnor * 1e3, "torch_fp32_ms": dense * 1e3, "speedup": dense / xnor,
        "speedup_median": timed["torch"].median_s / timed["xnor"].median_s,
        "xnor_unprepared_ms": timed["xnor_unprepared"].best_s * 1e3,
        "xnor_gword_ops_per_s": m * n * (-(-k // 64)) / xnor / 1e9,
        "fp32_gflops": 2 * m * n * k / dense / 1e9,
    }


def gpu_matmul(ta, tb, tf32: bool):
    """cuBLAS ta @ tb.T in float32 (tf32=False: SGEMM) or TF32 tensor cores."""
    def run():
        torch.backends.cuda.matmul.allow_tf32 = tf32
        return ta @ tb.T
    return run


def gpu_cases(repeats, sizes):
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() == 0:
            return []
    except Exception:  # no CuPy or no driver: CPU-only machine
        return []
    rng = np.random.default_rng(0)
    results = []
    for size in sizes:
        a = cupy.asarray(rng.standard_normal((size, size), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((size, size), dtype=np.float32))
        a_bits, b_bits = pack_bits(a), pack_bits(b)
        ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
        functions = {f"xnor_{variant}": (lambda v=variant: xnor_gemm(a_bits, b_bits, size, variant=v))
                     for variant in ("cuda_core", "tensor_core")}
        functions |= {"cublas_sgemm": gpu_matmul(ta, tb, False), "cublas_tf32": gpu_matmul(ta, tb, True)}
        timed = race(functions, repeats=repeats, min_sample_s=0.02, synchronize=cupy.cuda.Device().synchronize)
        torch.backends.cuda.matmul.allow_tf32 = False
        row = {"M": size, "K": size, "N": size} | {f"{name}_ms": 1e3 * t.best_s for name, t in timed.items()}
        for variant in ("cuda_core", "tensor_core"):
            for base in ("sgemm", "tf32"):
                row[f"{variant}_vs_{base}"] = row[f"cublas_{base}_ms"] / row[f"xnor_{variant}_ms"]
        results.append(row)
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=numba.config.NUMBA_NUM_THREADS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="small shapes, to check the script works")
    args = parser.parse_args(argv)
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    cpu.warm_up()
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'M':>5} {'K':>5} {'N':>5} {'xnor ms':>9} {'fp32 ms':>9} {'speed-up':>9} {'goal':>6}")
    for (m, k, n), goal in (QUICK_CPU_SHAPES if args.quick else CPU_SHAPES).items():
        row = cpu_case(m, k, n, args.repeats, rng) | {"goal_speedup": goal}
        row["meets_goal"] = row["speedup"] >= goal
        rows.append(row)
        print(f"{m:>5} {k:>5} {n:>5} {row['xnor_ms']:>9.3f} {row['torch_fp32_ms']:>9.3f} "
              f"{row['speedup']:>8.1f}x {goal:>5}x")
    shape = QUICK_NAIVE_SHAPE if args.quick else NAIVE_SHAPE
    naive = naive_case(*shape, args.repeats, rng)
    print(f"vs the unoptimised float32 kernel at {shape}: {naive['speedup']:.1f}x (the paper: 23x on a GPU)")
    gpu = gpu_cases(args.repeats, QUICK_GPU_SIZES if args.quick else GPU_SIZES)
    for row in gpu:
        print(f"GPU {row['M']}^3: " + ", ".join(f"{key} {value:.3f}" for key, value in row.items()
                                              if key not in ("M", "K", "N")))
    report = {"machine": provenance(threads=args.threads) | {"numba_threading_layer": numba.threading_layer()},
              "repeats": args.repeats, "quick": args.quick, "cpu": rows, "cpu_vs_unoptimised": naive,
              "gpu": gpu, "note": "xnor timings include packing the float32 activations; weights packed once"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
