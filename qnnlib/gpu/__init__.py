"""What runs on a GPU beyond the kernels: the bit-packed engine (`engine`), the array
operations it and the benchmarks use on CUDA or, for dry runs, on a CPU (`ops`), the
run-time measurements (`bench`) and the captured training step (`graphed_training`).

Nothing here imports CuPy at import time; `ops.get_ops(dry_run=False)` needs it.
"""
