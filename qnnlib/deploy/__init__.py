"""Bit-packed inference for a trained binarized MLP (arXiv:1609.07061, "Very power efficient in forward pass").

`BinaryMLP.from_torch(model)` turns the paper's MNIST BNN (`qnnlib.models.mnist_mlp`
with sign weights and sign activations) into integer-only hidden layers, reproducing
the torch model in eval mode (dropout off, batch norm on its running statistics):

* First layer, on raw uint8 pixels x (the model saw x_f = 2x/255 - 1):
  W_b . x_f = (2/255) W_b . x - sum(W_b), with W_b . x an exact integer computed from
  the pixels' 8 bit-planes (`qnnlib.kernels.bitplane`).
* Batch norm followed by sign is a comparison of the integer pre-activation with one
  integer threshold per unit, possibly flipped (`folding`).
* Hidden layers: XNOR-popcount (`qnnlib.kernels`) with that threshold/flip epilogue,
  which emits the next layer's packed activations directly.
* Last layer: integer scores, then the float32 batch-norm affine (s + b) * scale +
  shift, computed the way torch's CPU batch norm does; argmax.

Remaining difference from torch: torch sums W_b . x_f in float32, in an order of its
BLAS's choosing, so when the exact pre-activation lies within float32 rounding (~1e-5)
of a unit's switch point torch may fire where the exact integer model does not. This
engine computes the exact value; on MNIST the two agree on every test image (tested).

Modules: `engine` (BinaryMLP), `convert` (torch model -> packed layers), `folding`
(batch norm -> thresholds), `fileformat` (the .npz file), `errors` (DeployError).
"""
from qnnlib.deploy.engine import BinaryMLP
from qnnlib.deploy.errors import DeployError
from qnnlib.deploy.fileformat import FORMAT, FORMAT_VERSION, INPUT_SCALINGS

__all__ = ["BinaryMLP", "DeployError", "FORMAT", "FORMAT_VERSION", "INPUT_SCALINGS"]
