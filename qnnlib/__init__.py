"""qnnlib: the library behind the qnn-replication notebooks.

Quantizers and their straight-through estimators (`quantizers`), quantized layers
(`layers`), the paper's MNIST network (`models`), its training protocol (`training`,
`cli`), verified MNIST loading (`data`), bit packing and XNOR-popcount GEMM kernels
(`bitpack`, `kernels`), a bit-packed inference engine (`deploy`), and what the notebooks
share: accumulator formats, shift-based batch norm and AdaMax, energy accounting,
experiment grids, figures, claims (`accumulators`, `shift`, `energy`, `experiments`,
`viz`, `claims`).

Paper: Hubara, Courbariaux, Soudry, El-Yaniv, Bengio, "Quantized Neural Networks:
Training Neural Networks with Low Precision Weights and Activations", arXiv:1609.07061.
"""

__version__ = "0.1.0"
