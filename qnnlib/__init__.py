"""qnnlib: the numerical core of the qnn-replication.

Quantizers and their straight-through estimators (`quantizers`), quantized layers
(`layers`), the paper's MNIST network (`models`), its training protocol (`training`,
`train_config`, `checkpoints`, `determinism`), verified MNIST loading (`data`), bit
packing and XNOR-popcount GEMM kernels (`bitpack`, `kernels`), the float32 product whose
sums run in a fixed order, the same bits on every CPU (`ordered_matmul`, `ordered_linear`),
the bit-packed inference engine (`deploy`, `gpu`), and the method code the notebooks share: experiment grids,
accumulator formats, shift-based batch norm and AdaMax, the straight-through estimator's
maths, energy accounting, timing and provenance (`experiments`, `accumulators`, `shift`,
`ste`, `binarization`, `energy`, `timing`, `provenance`).

It imports only torch, torchvision, numpy, numba, pandas and tqdm (CuPy lazily); the
pipeline around it (notebooks, DVC, claims, figures) is the `qnnpipeline` package.

Paper: Hubara, Courbariaux, Soudry, El-Yaniv, Bengio, "Quantized Neural Networks:
Training Neural Networks with Low Precision Weights and Activations", arXiv:1609.07061.
"""

__version__ = "0.1.0"
