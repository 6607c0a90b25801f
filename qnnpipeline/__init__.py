"""qnnpipeline: the replication's pipeline around the `qnnlib` core.

The papermill notebook runner (`notebooks`), params.yaml and `--set` overrides
(`params`), the `qnn-train` command (`cli`), finished runs on disk (`runs`), the claims
table (`claims`), the figure index (`viz`), the results folders of the checkout
(`paths`) and the bit-for-bit check of the committed results (`verify`). The core
(`qnnlib`) never imports this package.

Importing it pins the CPU numerics (`qnnlib.numerics`, profile "portable" unless
`QNN_NUMERICS=native`) before anything imports torch: every stage, `qnn-train`, notebook
kernel and training worker the pipeline starts computes the same bits on any x86-64 CPU
with AVX2.
"""
from qnnlib import numerics as _numerics

_numerics.pin()
