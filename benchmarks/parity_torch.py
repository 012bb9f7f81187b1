"""zoo's modern layers against PyTorch in float64: forward, input gradient, parameter gradients.

Each layer is built in zoo, its weights are copied into the PyTorch module that does the same
thing, both run forward on the same input and backward from the same output gradient, and the
largest absolute differences are printed. Runs in an environment that has torch (never a
dependency of zoo), with zoo importable:

    PYTHONPATH=. /work/peers-venv/bin/python benchmarks/parity_torch.py [--tol 1e-10]

It exits 1 if any difference exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch
from torch import nn

from zoo.layers.activations import GELU
from zoo.layers.attention import MultiHeadAttention
from zoo.layers.dense import Dense
from zoo.layers.embedding import Embedding, PositionalEmbedding, SinusoidalPositionalEncoding
from zoo.layers.layernorm import LayerNorm, RMSNorm
from zoo.layers.patch import PatchEmbedding1D, PatchEmbedding2D
from zoo.layers.pool import GlobalMaxPool1D, GlobalMaxPool2D
from zoo.layers.residual import ResidualBlock1D, ResidualBlock2D
from zoo.layers.transformer import TransformerEncoderBlock

torch.set_default_dtype(torch.float64)


def T(a):  # noqa: N802 (a numpy array as a float64 tensor)
    return torch.from_numpy(np.ascontiguousarray(a, np.float64))


def build(layer, shape, seed=0):
    rng = np.random.default_rng(seed)
    if hasattr(layer, "children") and isinstance(layer.children, tuple):
        layer.build(shape, rng, dtype=np.float64)
    else:
        layer.dtype = np.float64
        layer.build(shape, rng)
    for _, p in layer.named_parameters():  # move every weight off its initial value
        p.value[...] += rng.standard_normal(p.value.shape) * 0.2
    return layer


def same(zoo_value, tensor):
    return float(np.max(np.abs(np.asarray(zoo_value) - tensor.detach().numpy())))


class Case:
    """One comparison: a zoo layer, a torch function, and how their parameters correspond.

    ``params`` maps a zoo parameter name to ``(torch tensor, to_torch)``, ``to_torch`` turning
    zoo's layout into PyTorch's (identity when they agree).
    """

    def __init__(self, name, layer, shape, torch_fn, params, *, x=None, training=False,
                 forward_kwargs=None, input_grad=True, batch=4, seed=0):
        self.name, self.layer, self.shape = name, layer, shape
        self.torch_fn, self.params, self.training = torch_fn, params, training
        self.forward_kwargs = forward_kwargs or {}
        self.input_grad, self.batch, self.seed = input_grad, batch, seed
        self.x = x

    def run(self) -> dict:
        rng = np.random.default_rng(self.seed + 100)
        x = self.x if self.x is not None else rng.standard_normal((self.batch, *self.shape))
        y = self.layer.forward(x.copy(), self.training, **self.forward_kwargs)
        g = rng.standard_normal(y.shape)
        dx = self.layer.backward(g.copy())
        xt = T(x) if self.input_grad else torch.from_numpy(np.asarray(x).astype(np.int64))
        if self.input_grad:
            xt.requires_grad_(True)
        yt = self.torch_fn(xt)
        yt.backward(T(g))
        diffs = {"forward": same(y, yt)}
        if self.input_grad:
            diffs["input grad"] = same(dx, xt.grad)
        worst = 0.0
        for name, p in self.layer.named_parameters():
            tensor, to_torch = self.params[name]
            worst = max(worst, same(to_torch(p.grad), tensor.grad))
        if self.params:
            diffs["param grads"] = worst
        missing = sorted(set(self.params) - {n for n, _ in self.layer.named_parameters()})
        if missing:
            raise AssertionError(f"{self.name}: zoo has no parameters {missing}")
        return diffs


def ident(a):
    return a


def load(params):
    """Copy zoo values into the torch tensors; return the mapping for the gradient check."""
    with torch.no_grad():
        for _, (tensor, to_torch, value) in params.items():
            tensor.copy_(T(to_torch(value)))
    return {name: (tensor, to_torch) for name, (tensor, to_torch, _) in params.items()}


def zp(layer, name):
    return dict(layer.named_parameters())[name].value


# -- the cases ------------------------------------------------------------------------------
def case_layernorm():
    layer = build(LayerNorm((3, 5)), (2, 3, 5))
    mod = nn.LayerNorm((3, 5), eps=1e-5)
    params = load({"weight": (mod.weight, ident, zp(layer, "weight")),
                   "bias": (mod.bias, ident, zp(layer, "bias"))})
    return Case("LayerNorm((3, 5))", layer, (2, 3, 5), mod, params)


def case_rmsnorm():
    layer = build(RMSNorm(eps=1e-6), (4, 6))
    mod = nn.RMSNorm(6, eps=1e-6)
    params = load({"weight": (mod.weight, ident, zp(layer, "weight"))})
    return Case("RMSNorm(6)", layer, (4, 6), mod, params)


def _mha_params(layer, mod, prefix=""):
    return {f"{prefix}in_proj_weight": (mod.in_proj_weight, ident,
                                        zp(layer, f"{prefix}in_proj_weight")),
            f"{prefix}in_proj_bias": (mod.in_proj_bias, ident, zp(layer, f"{prefix}in_proj_bias")),
            f"{prefix}out_proj.weight": (mod.out_proj.weight, ident,
                                         zp(layer, f"{prefix}out_proj.weight")),
            f"{prefix}out_proj.bias": (mod.out_proj.bias, ident,
                                       zp(layer, f"{prefix}out_proj.bias"))}


def case_mha(causal=False, padding=False):
    t, e, heads = 6, 8, 2
    layer = build(MultiHeadAttention(heads, causal=causal), (t, e))
    mod = nn.MultiheadAttention(e, heads, batch_first=True)
    params = load(_mha_params(layer, mod))
    mask = None
    if padding:
        mask = np.zeros((4, t), bool)
        mask[1, 4:] = True
        mask[3, 2:] = True
    attn_mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else None

    def fn(x):
        kpm = None if mask is None else torch.from_numpy(mask)
        return mod(x, x, x, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)[0]

    what = ", causal" if causal else ", key padding" if padding else ""
    return Case(f"MultiHeadAttention({heads}{what})", layer, (t, e), fn, params,
                forward_kwargs={"key_padding_mask": mask} if padding else {})


def case_embedding():
    layer = build(Embedding(10, 4, padding_idx=0), (5,))
    mod = nn.Embedding(10, 4, padding_idx=0)
    params = load({"weight": (mod.weight, ident, zp(layer, "weight"))})
    x = np.random.default_rng(5).integers(0, 10, (4, 5))
    x[0, :2] = 0
    return Case("Embedding(10, 4, padding_idx=0)", layer, (5,), mod, params, x=x,
                input_grad=False)


def case_positional():
    layer = build(PositionalEmbedding(), (5, 4))
    table = nn.Parameter(torch.zeros(5, 4))
    params = load({"weight": (table, ident, zp(layer, "weight"))})
    return Case("PositionalEmbedding", layer, (5, 4), lambda x: x + table, params)


def case_sinusoidal():
    t, e = 7, 6
    layer = build(SinusoidalPositionalEncoding(), (t, e))
    # The table of PyTorch's transformer tutorial (PositionalEncoding), batch first.
    position = torch.arange(t).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, e, 2) * (-math.log(10000.0) / e))
    pe = torch.zeros(t, e)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return Case("SinusoidalPositionalEncoding", layer, (t, e), lambda x: x + pe, {})


def case_patch1d(shape=(12, 3), patch=4):
    layer = build(PatchEmbedding1D(patch, 5), shape)
    features = 1 if len(shape) == 1 else shape[1]
    mod = nn.Conv1d(features, 5, patch, stride=patch)
    params = load({"weight": (mod.weight, ident, zp(layer, "weight")),
                   "bias": (mod.bias, ident, zp(layer, "bias"))})

    def fn(x):
        seq = x.reshape(x.shape[0], shape[0], features).transpose(1, 2)
        return mod(seq).transpose(1, 2)

    return Case(f"PatchEmbedding1D({patch}) on {shape}", layer, shape, fn, params)


def case_patch2d():
    shape = (3, 8, 8)
    layer = build(PatchEmbedding2D(4, 6), shape)
    mod = nn.Conv2d(3, 6, 4, stride=4)
    params = load({"weight": (mod.weight, ident, zp(layer, "weight")),
                   "bias": (mod.bias, ident, zp(layer, "bias"))})
    return Case("PatchEmbedding2D(4)", layer, shape, lambda x: mod(x).flatten(2).transpose(1, 2),
                params)


def case_global_max(rank):
    if rank == 2:
        layer, mod, shape = build(GlobalMaxPool2D(), (3, 4, 5)), nn.AdaptiveMaxPool2d(1), \
            (3, 4, 5)
        return Case("GlobalMaxPool2D", layer, shape, lambda x: mod(x).flatten(1), {})
    layer, mod = build(GlobalMaxPool1D(), (7, 3)), nn.AdaptiveMaxPool1d(1)
    return Case("GlobalMaxPool1D", layer, (7, 3),
                lambda x: mod(x.transpose(1, 2)).flatten(1), {})


def case_gelu():
    layer = build(GELU(approximate="none"), (5, 6))
    return Case("GELU(approximate='none')", layer, (5, 6), nn.GELU(), {})


def case_dense_gelu():
    layer = build(Dense(7, activation="gelu_erf"), (5,))
    mod = nn.Linear(5, 7)
    params = load({"weight": (mod.weight, np.transpose, zp(layer, "weight")),
                   "bias": (mod.bias, ident, zp(layer, "bias"))})
    return Case("Dense(7, activation='gelu_erf')", layer, (5,),
                lambda x: nn.functional.gelu(mod(x)), params)


def case_encoder(causal=False):
    t, e, heads, hidden = 5, 8, 2, 12
    layer = build(TransformerEncoderBlock(heads, hidden, dropout=0.0, causal=causal), (t, e))
    mod = nn.TransformerEncoderLayer(e, heads, hidden, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True)
    mod.eval()  # dropout off; the same function as training with p = 0
    params = _mha_params(layer, mod.self_attn, "self_attn.")
    for name in ("linear1", "linear2"):
        sub = getattr(mod, name)
        params[f"{name}.weight"] = (sub.weight, np.transpose, zp(layer, f"{name}.weight"))
        params[f"{name}.bias"] = (sub.bias, ident, zp(layer, f"{name}.bias"))
    for name in ("norm1", "norm2"):
        sub = getattr(mod, name)
        params[f"{name}.weight"] = (sub.weight, ident, zp(layer, f"{name}.weight"))
        params[f"{name}.bias"] = (sub.bias, ident, zp(layer, f"{name}.bias"))
    params = load(params)
    mask = nn.Transformer.generate_square_subsequent_mask(t) if causal else None

    def fn(x):
        if causal:
            return mod(x, src_mask=mask, is_causal=True)
        return mod(x)

    return Case(f"TransformerEncoderBlock({heads}, {hidden}{', causal' if causal else ''})",
                layer, (t, e), fn, params)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, written out (torchvision is not needed for this)."""

    def __init__(self, rank, cin, cout, stride, k):
        super().__init__()
        conv = nn.Conv2d if rank == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if rank == 2 else nn.BatchNorm1d
        self.conv1 = conv(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, k, padding=k // 2, bias=False)
        self.bn2 = bn(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False),
                                            bn(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


def case_residual(rank, cin, cout, stride):
    shape = (cin, 6, 6) if rank == 2 else (9, cin)
    layer = build((ResidualBlock2D if rank == 2 else ResidualBlock1D)(cout, stride=stride),
                  shape)
    mod = BasicBlock(rank, cin, cout, stride, 3)
    mod.train()  # batch statistics, as zoo's training mode
    # Conv1D keeps Keras' (K, F, O) layout; PyTorch's Conv1d is (O, F, K).
    conv_t = ident if rank == 2 else (lambda w: np.transpose(w, (2, 1, 0)))
    subs = {"conv1": mod.conv1, "bn1": mod.bn1, "conv2": mod.conv2, "bn2": mod.bn2}
    if mod.downsample is not None:
        subs.update({"downsample_conv": mod.downsample[0], "downsample_bn": mod.downsample[1]})
    params = {}
    for name, sub in subs.items():
        for pname in ("weight", "bias"):
            tensor = getattr(sub, pname, None)
            if tensor is not None:
                to = conv_t if "conv" in name else ident
                params[f"{name}.{pname}"] = (tensor, to, zp(layer, f"{name}.{pname}"))
    params = load(params)

    def fn(x):
        return mod(x) if rank == 2 else mod(x.transpose(1, 2)).transpose(1, 2)

    kind = "2D" if rank == 2 else "1D"
    return Case(f"ResidualBlock{kind}({cout}, stride={stride}) on {cin} channels", layer,
                shape, fn, params, training=True)


CASES = [
    case_layernorm, case_rmsnorm, case_mha, lambda: case_mha(causal=True),
    lambda: case_mha(padding=True), case_embedding, case_positional, case_sinusoidal,
    case_patch1d, lambda: case_patch1d((12,), 3), case_patch2d,
    lambda: case_global_max(1), lambda: case_global_max(2), case_gelu, case_dense_gelu,
    case_encoder, lambda: case_encoder(causal=True),
    lambda: case_residual(2, 3, 3, 1), lambda: case_residual(2, 3, 4, 2),
    lambda: case_residual(1, 2, 2, 1), lambda: case_residual(1, 2, 4, 2),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-10,
                        help="largest absolute difference accepted (float64)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, float64; max |zoo - torch| per quantity")
    print(f"{'layer':<48} {'forward':>9} {'input grad':>10} {'param grads':>11}")
    failed = 0
    for make in CASES:
        case = make()
        diffs = case.run()
        cells = [f"{diffs[k]:.1e}" if k in diffs else "-" for k in
                 ("forward", "input grad", "param grads")]
        bad = any(v > args.tol for v in diffs.values())
        failed += bad
        print(f"{case.name:<48} {cells[0]:>9} {cells[1]:>10} {cells[2]:>11}"
              f"{'  FAIL' if bad else ''}")
    print(f"{len(CASES) - failed} of {len(CASES)} within {args.tol:g}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
