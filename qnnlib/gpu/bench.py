"""GPU measurements behind the paper's run-time claims (arXiv:1609.07061, "Seven times faster on GPU at run-time").

* `kernel_benchmark`: A (M, K) @ B (N, K).T of ±1 matrices, timed for both XNOR kernels
  (CUDA cores, tensor cores), cuBLAS SGEMM (float32, TF32 off), TF32, FP16 and BF16
  tensor-core GEMMs (`torch.matmul`), the INT8 tensor-core GEMM (`torch._int_mm`; ±1 is
  exact in int8), and the unoptimised pair of the paper's 23x: a one-thread-per-output
  float32 kernel and an XNOR-popcount kernel of the same style.
* `inference_benchmark`: the 7x analogue. The MNIST BNN as `BinaryMLP` on the GPU
  (`DeviceMLP`: uint8 images in, labels out) against the same network in float32 with
  the unoptimised kernel and with cuBLAS, and the labels of each against the float
  torch model on every image.

Times are medians over samples taken by `qnnlib.timing.race`, with the device synchronised
before every clock reading (CUDA-device-wide, so CuPy launches are covered too), in ms.
"""
from __future__ import annotations

import numpy as np
import torch

from qnnlib.bitpack import pack_bits
from qnnlib.data import scale_inputs
from qnnlib.deploy import BinaryMLP
from qnnlib.gpu.engine import DeviceMLP
from qnnlib.layers import QuantLinear
from qnnlib.timing import race

__all__ = ["median_ms", "gemm_methods", "kernel_benchmark", "inference_benchmark"]

INT8_MIN_ROWS = 17  # torch._int_mm needs M > 16 and K, N multiples of 8


def median_ms(fn, min_run_time: float, min_samples: int = 3) -> float:
    """Median wall time of `fn()` in ms over `min_samples` samples of about
    `min_run_time / min_samples` s each (`qnnlib.timing.race`, the project's one timing
    helper; the device is synchronised before every clock reading)."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else None
    timing = race({"fn": fn}, repeats=min_samples, min_sample_s=min_run_time / min_samples,
                  synchronize=synchronize)["fn"]
    return 1e3 * timing.median_s


def _sign_matrix(xp, rows, cols, seed):
    rng = np.random.default_rng(seed)
    return xp.asarray(np.where(rng.random((rows, cols), dtype=np.float32) < 0.5, -1, 1)
                      .astype(np.float32))


def _int8_operands(ta, tb):
    """int8 copies of A (M, K) and of B.T as a column-major (K, N) view (cuBLASLt's fast
    "TN" int8 layout), zero-padded to what `torch._int_mm` accepts."""
    (m, k), n = ta.shape, tb.shape[0]
    rows, depth, cols = max(m, INT8_MIN_ROWS), -(-k // 8) * 8, -(-n // 8) * 8
    a8 = torch.zeros(rows, depth, dtype=torch.int8, device=ta.device)
    b8 = torch.zeros(cols, depth, dtype=torch.int8, device=ta.device)
    a8[:m, :k] = ta.to(torch.int8)
    b8[:n, :k] = tb.to(torch.int8)
    return a8, b8.T


def gemm_methods(ops, m: int, n: int, k: int, seed: int = 0) -> dict:
    """name -> (allow_tf32, fn): every way of computing the (m, n, k) ±1 product; each fn
    returns its result (a slice of it where the operands were padded)."""
    xp = ops.xp
    a, b = _sign_matrix(xp, m, k, seed), _sign_matrix(xp, n, k, seed + 1)
    a_bits, b_bits = pack_bits(a), pack_bits(b)
    bt, bt_bits = xp.ascontiguousarray(b.T), xp.ascontiguousarray(b_bits.T)
    ta, tb = ops.to_torch(a), ops.to_torch(b)
    half, bf16 = (ta.half(), tb.half()), (ta.bfloat16(), tb.bfloat16())
    a8, b8 = _int8_operands(ta, tb)
    methods = {f"xnor_{variant}": (False, lambda v=variant: ops.xnor(a_bits, b_bits, k, v))
               for variant in ops.variants()}
    methods.update({
        "cublas_sgemm": (False, lambda: ta @ tb.T),
        "tf32": (True, lambda: ta @ tb.T),
        "fp16": (False, lambda: half[0] @ half[1].T),
        "bf16": (False, lambda: bf16[0] @ bf16[1].T),
        "int8": (False, lambda: torch._int_mm(a8, b8)[:m, :n]),
        "naive_float": (False, lambda: ops.naive_sgemm(a, bt)),
        "naive_xnor": (False, lambda: ops.naive_xnor(a_bits, bt_bits, k)),
    })
    return methods


# methods whose result must equal the exact integer product (fp16/bf16/tf32 may round)
EXACT = ("xnor_cuda_core", "xnor_tensor_core", "cublas_sgemm", "int8", "naive_float", "naive_xnor")


def _as_numpy(ops, result) -> np.ndarray:
    if isinstance(result, torch.Tensor):
        return result.float().cpu().numpy()
    return np.asarray(ops.xp.asnumpy(result) if ops.name == "cuda" else result)


def kernel_benchmark(ops, shapes: dict, min_run_time: float = 0.2) -> list[dict]:
    """One row per named (m, n, k) shape: `<method>_ms` for every method of
    `gemm_methods` (None where the device lacks it), `exact` per exact method, and the
    ratios the paper quotes."""
    rows = []
    for name, (m, n, k) in shapes.items():
        row = {"shape": name, "m": m, "n": n, "k": k}
        methods = gemm_methods(ops, m, n, k)
        reference = None
        exact = {}
        for method, (tf32, fn) in methods.items():
            torch.backends.cuda.matmul.allow_tf32 = tf32
            result = _as_numpy(ops, fn())
            if method == "cublas_sgemm":
                reference = result
            if method in EXACT:
                exact[method] = result
            row[f"{method}_ms"] = median_ms(fn, min_run_time)
        torch.backends.cuda.matmul.allow_tf32 = False
        row["exact"] = {method: bool(np.array_equal(value, reference))
                        for method, value in exact.items()}
        row.setdefault("xnor_tensor_core_ms", None)
        row.update(_ratios(row))
        rows.append(row)
    return rows


def _ratios(row: dict) -> dict:
    def ratio(slow, fast):
        return None if row.get(fast) is None else row[slow] / row[fast]

    return {"tensor_core_vs_sgemm": ratio("cublas_sgemm_ms", "xnor_tensor_core_ms"),
            "cuda_core_vs_sgemm": ratio("cublas_sgemm_ms", "xnor_cuda_core_ms"),
            "tensor_core_vs_int8": ratio("int8_ms", "xnor_tensor_core_ms"),
            "naive_xnor_vs_naive_float": ratio("naive_float_ms", "naive_xnor_ms"),
            "cuda_core_vs_naive_float": ratio("naive_float_ms", "xnor_cuda_core_ms")}


def float_forward(model: torch.nn.Module, matmul):
    """The eval-mode network with each QuantLinear as `matmul(h, W_b.T) + bias` (W_b =
    sign(W) in float32, prepared once); every other module runs as is."""
    steps = []
    for module in model:
        if isinstance(module, QuantLinear):
            weights = module.quantized_weight().detach().T.contiguous()
            steps.append(lambda h, w=weights, b=module.bias: matmul(h, w) + b)
        elif not isinstance(module, torch.nn.Dropout):  # identity in eval mode
            steps.append(module)

    @torch.no_grad()
    def forward(x):
        for step in steps:
            x = step(x)
        return x
    return forward


def naive_matmul(ops):
    """`matmul(h, wt)` through the unoptimised float32 kernel (torch in, torch out)."""
    def matmul(h, wt):
        return ops.to_torch(ops.naive_sgemm(ops.from_torch(h.contiguous()), ops.from_torch(wt)))
    return matmul


def inference_benchmark(ops, model: torch.nn.Module, images: np.ndarray,
                        min_run_time: float = 0.2) -> dict:
    """Bit-packed engine vs float32 (unoptimised kernel, cuBLAS) on `images` (uint8)."""
    model = model.cpu().eval()
    binary = BinaryMLP.from_torch(model)
    engine = DeviceMLP(binary, ops)
    model.to(ops.torch_device)
    naive, cublas = float_forward(model, naive_matmul(ops)), float_forward(model, torch.matmul)
    torch.backends.cuda.matmul.allow_tf32 = False
    pixels = ops.xp.asarray(images)
    x = scale_inputs(torch.from_numpy(images)).to(ops.torch_device)
    runs = {"bnn": lambda: engine.predict(pixels),
            "float_naive": lambda: naive(x).argmax(dim=1),
            "float_cublas": lambda: cublas(x).argmax(dim=1)}
    with torch.no_grad():
        reference = model(x).argmax(dim=1).cpu().numpy()
    result = {"images": int(len(images)), "in_features": binary.in_features,
              "units": [int(layer["weights"].shape[0]) for layer in binary.layers],
              "packed_weight_bytes": binary.nbytes}
    for name, fn in runs.items():
        labels = _as_numpy(ops, fn()).astype(np.int64)
        result[f"{name}_agree"] = int((labels == reference).sum())
        result[f"{name}_ms"] = median_ms(fn, min_run_time)
    result["all_agree"] = all(result[f"{name}_agree"] == len(images) for name in runs)
    result["bnn_vs_float_naive"] = result["float_naive_ms"] / result["bnn_ms"]
    result["bnn_vs_float_cublas"] = result["float_cublas_ms"] / result["bnn_ms"]
    return result

