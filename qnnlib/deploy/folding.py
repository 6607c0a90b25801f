"""Batch norm + sign folded into one integer threshold per unit (arXiv:1609.07061, "Very power efficient in forward pass").

sign(gamma (y - mu) / sqrt(var + eps) + beta), with y = s + b and s the exact integer
pre-activation of a binary layer, is a comparison of s with one integer per unit:
+1 <=> s >= T (gamma > 0), or s <= T' <=> NOT (s >= T' + 1) (gamma < 0, "flip"), or the
constant sign(beta) (gamma = 0, threshold INT32_MIN). T is found by evaluating torch's
own float32 batch norm at the integers around the real root (`fold_bn_sign`), so the
integer model fires exactly where torch's eval-mode batch norm does.

The last layer keeps its scores: `bn_affine` gives the float32 scale and shift of torch's
CPU batch norm, applied to the integer scores by `affine`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qnnlib.deploy.errors import DeployError

INT32_MIN = np.iinfo(np.int32).min
INT32_MAX = np.iinfo(np.int32).max
SEARCH_RADIUS = 3  # integers tried on each side of the real-valued switch point


def pixel_thresholds(weights, bias, bn):
    """Thresholds on t = W_b . x (uint8 x), where the model's pre-activation is
    W_b . (2x/255 - 1) + b = (2/255) t - sum(W_b) + b. `weights`: ±1 float (units, k)."""
    weight_sums = weights.sum(axis=1)
    k_max = 255 * weights.shape[1]
    return fold_bn_sign(lambda t: 2.0 * t / 255.0 - weight_sums, 2.0 / 255.0, -weight_sums,
                        bias, bn, k_max)


def hidden_thresholds(weights, bias, bn):
    """Thresholds on s = W_b . a, a in {-1, +1}^K; clipped to [-K, K+1] like xnor_gemm."""
    k_max = weights.shape[1]
    zeros = np.zeros(weights.shape[0])
    thresholds, flip = fold_bn_sign(lambda s: s * 1.0, 1.0, zeros, bias, bn, k_max)
    return np.clip(thresholds, -k_max, k_max + 1), flip


def fold_bn_sign(preactivation, slope, offset, bias, bn, k_max):
    """Integer thresholds T and flips with sign(BN(pre(k) + b)) = +1 <=> (k >= T) XOR flip.

    pre(k) = slope * k + offset is the exact linear output without bias b (float32
    tensor). The real root of gamma (pre(k) + b - mu) / sqrt(var + eps) + beta = 0 is
        k* = (mu - b - beta sqrt(var + eps) / gamma - offset) / slope.
    Rounding k* is not enough: torch evaluates the same expression in float32. So the
    integers k* - R .. k* + R are pushed through torch's own batch norm (eval mode) as
    float32(pre(k) + b), and the switch point is read off; this is monotone in k because
    every float32 step is. gamma = 0 gives the constant sign(beta) (threshold INT32_MIN).
    """
    check_bn(bn)
    gamma, beta, mu, var = (t.detach().double().numpy() for t in bn_parameters(bn))
    bias = bias.double().numpy()
    gamma_safe = np.where(gamma == 0, 1.0, gamma)
    root = (mu - bias - beta * np.sqrt(var + bn.eps) / gamma_safe - offset) / slope
    center = np.round(np.clip(np.nan_to_num(root), -k_max - SEARCH_RADIUS - 1, k_max + SEARCH_RADIUS + 1))
    candidates = center[None, :] + np.arange(-SEARCH_RADIUS, SEARCH_RADIUS + 1)[:, None]
    fires = torch_fires(preactivation(candidates) + bias, bn)  # (2R+1, units) bool
    thresholds = np.empty(len(gamma), np.int64)
    flip = gamma < 0
    for unit in range(len(gamma)):
        column = fires[:, unit]
        if gamma[unit] == 0:
            thresholds[unit] = INT32_MIN
            flip[unit] = not column[0]
            continue
        rising = column if gamma[unit] > 0 else ~column
        if np.any(rising[1:] < rising[:-1]):
            raise DeployError(f"batch norm of unit {unit} is not monotone in its input; cannot threshold it")
        switch = int(np.argmax(rising)) if rising.any() else len(rising)
        inside = 0 < switch < len(rising)
        if not inside and abs(root[unit]) <= k_max:
            raise DeployError(f"could not locate the switch point of unit {unit} near {root[unit]:.3f}")
        # first firing k (gamma > 0) or first non-firing k (gamma < 0: fire <=> k < it)
        thresholds[unit] = int(center[unit]) - SEARCH_RADIUS + switch
    return np.clip(thresholds, INT32_MIN, INT32_MAX).astype(np.int32), flip


def check_bn(bn: nn.BatchNorm1d) -> None:
    """Finite parameters and statistics, var >= 0 and var + eps > 0: else torch's batch
    norm is NaN or infinite somewhere and no threshold reproduces it."""
    if bn.running_mean is None or bn.running_var is None:
        raise DeployError("batch norm without running statistics cannot be folded into thresholds")
    for name, tensor in zip(("weight", "bias", "running_mean", "running_var"), bn_parameters(bn)):
        if not torch.isfinite(tensor).all():
            raise DeployError(f"batch norm {name} contains NaN or infinity")
    if (bn.running_var < 0).any() or not (bn.running_var + bn.eps > 0).all():
        raise DeployError(f"batch norm needs running_var >= 0 and running_var + eps > 0 "
                          f"(eps is {bn.eps})")


def bn_parameters(bn: nn.BatchNorm1d):
    ones = torch.ones(bn.num_features)
    gamma = bn.weight if bn.weight is not None else ones
    beta = bn.bias if bn.bias is not None else ones * 0
    return gamma, beta, bn.running_mean, bn.running_var


def torch_fires(y: np.ndarray, bn: nn.BatchNorm1d) -> np.ndarray:
    """sign(BN(y)) >= 0 evaluated by torch in float32, eval mode (y: (rows, units))."""
    y32 = torch.from_numpy(y).float()
    z = nn.functional.batch_norm(y32, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 training=False, eps=bn.eps)
    return (z >= 0).numpy()


def bn_affine(bn: nn.BatchNorm1d):
    """float32 scale, shift with BN(y) = y * scale + shift, as torch's CPU kernel forms them:
    invstd = 1 / sqrt(var + eps), scale = invstd * gamma, shift = beta - mean * invstd * gamma."""
    check_bn(bn)
    gamma, beta, mu, var = (t.detach().float().numpy() for t in bn_parameters(bn))
    invstd = np.float32(1) / np.sqrt(var + np.float32(bn.eps))
    return invstd * gamma, beta - mu * invstd * gamma


def affine(dots: np.ndarray, bias, scale, shift) -> np.ndarray:
    """(s + b) * scale + shift in float32: the last batch norm on integer scores."""
    return (dots.astype(np.float32) + bias) * scale + shift
