"""Batch normalisation, forward and backward, fused per channel.

Ioffe and Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", 2015 (https://arxiv.org/abs/1502.03167).

Two layouts: channels first ``(N, C, ...)`` (images; statistics over N and the spatial axes)
and channels last ``(..., C)`` (vectors and sequences; statistics over every axis but the last).
Training normalises with the batch's mean and biased variance and moves the running statistics
towards them: ``running = (1 - momentum) * running + momentum * batch``, with the unbiased
variance, as PyTorch does. Inference normalises with the running statistics. Sums accumulate
in float64 so float32 batches keep their precision. The forward pass returns the mean and
``1 / sqrt(var + eps)`` it used, which the backward pass takes back.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit
from zoo.kernels.conv import check_array, output_array


# -- channels first: x viewed as (N, C, S) ---------------------------------------------------
@njit
def _forward_cf(x, gamma, beta, rmean, rvar, momentum, eps, training, out, mean, invstd):
    n_, c_, s_ = x.shape
    m = n_ * s_
    for c in range(c_):
        if training:
            acc = 0.0
            for n in range(n_):
                for i in range(s_):
                    acc += x[n, c, i]
            mu = acc / m
            acc = 0.0
            for n in range(n_):
                for i in range(s_):
                    d = x[n, c, i] - mu
                    acc += d * d
            var = acc / m
            rmean[c] = (1 - momentum) * rmean[c] + momentum * mu
            rvar[c] = (1 - momentum) * rvar[c] + momentum * var * m / max(m - 1, 1)
        else:
            mu = rmean[c]
            var = rvar[c]
        inv = 1.0 / np.sqrt(var + eps)
        mean[c] = mu
        invstd[c] = inv
        scale = gamma[c] * inv
        shift = beta[c] - mu * scale
        for n in range(n_):
            for i in range(s_):
                out[n, c, i] = x[n, c, i] * scale + shift


@njit
def _backward_cf(g, x, gamma, mean, invstd, training, dx, dgamma, dbeta):
    n_, c_, s_ = x.shape
    m = n_ * s_
    for c in range(c_):
        mu = mean[c]
        inv = invstd[c]
        sdy = 0.0
        sdyx = 0.0
        for n in range(n_):
            for i in range(s_):
                dy = g[n, c, i]
                sdy += dy
                sdyx += dy * (x[n, c, i] - mu)
        sdyx *= inv
        dgamma[c] = sdyx
        dbeta[c] = sdy
        k = gamma[c] * inv
        if training:
            a = sdy / m
            b = sdyx / m * inv
            for n in range(n_):
                for i in range(s_):
                    dx[n, c, i] = k * (g[n, c, i] - a - (x[n, c, i] - mu) * b)
        else:
            for n in range(n_):
                for i in range(s_):
                    dx[n, c, i] = k * g[n, c, i]


# -- channels last: x viewed as (M, C) -------------------------------------------------------
@njit
def _forward_cl(x, gamma, beta, rmean, rvar, momentum, eps, training, out, mean, invstd):
    # plain loops rather than array expressions: same speed, half the compile time
    m, c_ = x.shape
    if training:
        s1 = np.zeros(c_)
        s2 = np.zeros(c_)
        for r in range(m):
            for c in range(c_):
                s1[c] += x[r, c]
        for c in range(c_):
            s1[c] /= m
        for r in range(m):
            for c in range(c_):
                d = x[r, c] - s1[c]
                s2[c] += d * d
        for c in range(c_):
            var = s2[c] / m
            rmean[c] = (1 - momentum) * rmean[c] + momentum * s1[c]
            rvar[c] = (1 - momentum) * rvar[c] + momentum * var * m / max(m - 1, 1)
            mean[c] = s1[c]
            invstd[c] = 1.0 / np.sqrt(var + eps)
    else:
        for c in range(c_):
            mean[c] = rmean[c]
            invstd[c] = 1.0 / np.sqrt(rvar[c] + eps)
    scale = np.empty_like(gamma)
    shift = np.empty_like(gamma)
    for c in range(c_):
        scale[c] = gamma[c] * invstd[c]
        shift[c] = beta[c] - mean[c] * scale[c]
    for r in range(m):
        for c in range(c_):
            out[r, c] = x[r, c] * scale[c] + shift[c]


@njit
def _backward_cl(g, x, gamma, mean, invstd, training, dx, dgamma, dbeta):
    m, c_ = x.shape
    sdy = np.zeros(c_)
    sdyx = np.zeros(c_)
    for r in range(m):
        for c in range(c_):
            dy = g[r, c]
            sdy[c] += dy
            sdyx[c] += dy * (x[r, c] - mean[c])
    k = np.empty_like(gamma)
    a = np.empty_like(gamma)
    b = np.empty_like(gamma)
    for c in range(c_):
        sdyx[c] *= invstd[c]
        dgamma[c] = sdyx[c]
        dbeta[c] = sdy[c]
        k[c] = gamma[c] * invstd[c]
        a[c] = sdy[c] / m if training else 0.0
        b[c] = sdyx[c] / m * invstd[c] if training else 0.0
    for r in range(m):
        for c in range(c_):
            dx[r, c] = k[c] * (g[r, c] - a[c] - (x[r, c] - mean[c]) * b[c])


def _view(x, channels_last):
    if channels_last:
        return x.reshape(-1, x.shape[-1])
    return x.reshape(x.shape[0], x.shape[1], -1)


def _check_vectors(name, dtype, channels, **arrays):
    for key, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.shape != (channels,) or a.dtype != dtype \
                or not a.flags.c_contiguous:
            raise DataError(f"{name}: {key} must be a contiguous {np.dtype(dtype)} vector of "
                            f"length {channels}; received {describe_array(a)}")


def batch_norm_forward(x, weight, bias, running_mean, running_var, momentum, eps, training,
                       channels_last=False, out=None, mean=None, invstd=None):
    """Normalise ``x`` per channel; returns ``(out, mean, invstd)``.

    In training the running statistics are updated in place.
    """
    check_array("batch_norm_forward: x", x, x.ndim)
    if x.ndim < 2:
        raise DataError(f"batch_norm_forward: x needs a batch and a channel axis; "
                        f"received {describe_array(x)}")
    channels = x.shape[-1] if channels_last else x.shape[1]
    _check_vectors("batch_norm_forward", x.dtype, channels, weight=weight, bias=bias,
                   running_mean=running_mean, running_var=running_var)
    out = output_array(out, x.shape, x.dtype, "batch_norm_forward")
    mean = output_array(mean, (channels,), x.dtype, "batch_norm_forward mean")
    invstd = output_array(invstd, (channels,), x.dtype, "batch_norm_forward invstd")
    kernel = _forward_cl if channels_last else _forward_cf
    kernel(_view(x, channels_last), weight, bias, running_mean, running_var, float(momentum),
           float(eps), bool(training), _view(out, channels_last), mean, invstd)
    return out, mean, invstd


def batch_norm_backward(grad, x, weight, mean, invstd, training, channels_last=False, out=None,
                        dweight=None, dbias=None):
    """Gradients of batch norm: returns ``(dx, dweight, dbias)`` (written to the given arrays).

    ``training`` must match the forward pass: with batch statistics the gradient flows through
    the mean and variance too; with running statistics the layer is a per-channel affine map.
    """
    check_array("batch_norm_backward: grad", grad, grad.ndim)
    check_array("batch_norm_backward: x", x, grad.ndim, grad.dtype)
    if grad.shape != x.shape:
        raise DataError(f"batch_norm_backward: grad must have the input's shape {x.shape}; "
                        f"received {describe_array(grad)}")
    channels = x.shape[-1] if channels_last else x.shape[1]
    dx = output_array(out, x.shape, x.dtype, "batch_norm_backward")
    dweight = output_array(dweight, (channels,), x.dtype, "batch_norm_backward dweight")
    dbias = output_array(dbias, (channels,), x.dtype, "batch_norm_backward dbias")
    _check_vectors("batch_norm_backward", x.dtype, channels, weight=weight, mean=mean,
                   invstd=invstd)
    kernel = _backward_cl if channels_last else _backward_cf
    kernel(_view(grad, channels_last), _view(x, channels_last), weight, mean, invstd,
           bool(training), _view(dx, channels_last), dweight, dbias)
    return dx, dweight, dbias
