"""Optimizers, in order of increasing complexity: SGD, RMSProp, Adam, AdamW.

``step(params, grads)`` updates each parameter array in place with one kernel call
(``zoo.kernels.optim``); per-parameter state ("slots": momentum, square averages) is allocated
on the first step. The trainer passes every parameter as one flat array, so a step is one call.
``state_dict()`` / ``load_state_dict()`` round-trip exactly: a resumed run is bit-identical.
Hyperparameters follow PyTorch's definitions (``torch.optim``); AdamW is Adam configured with
decoupled weight decay, not a copy of it.

Weight decay applies to every parameter by default, as in PyTorch and Keras (whose optimizers
decay all the variables they are given). ``decay_bias_norm=False`` follows the usual AdamW
recipe instead (BERT, timm, nanoGPT): parameters with fewer than two dimensions (biases, the
scales and shifts of normalisation layers) are not decayed. The trainer then hands the
optimizer two flat arrays, the decayed weights and the exempt ones, and ``decay_mask`` says
which is which.
"""

from __future__ import annotations

import math

import numpy as np

from zoo import kernels
from zoo.checks import boolean, fraction, number, positive_number
from zoo.errors import CheckpointError, ConfigError, DataError, describe_array


class Optimizer:
    """Base class: ``step``, ``state_dict``/``load_state_dict``, ``get_config``, ``repr``.

    Subclasses set ``name``, list their per-parameter state in ``slot_names()`` and update one
    parameter in place in ``_update(param, grad, *slots)``. ``get_config()`` returns the
    keyword arguments of ``__init__``: ``load_state_dict`` re-runs ``__init__`` with them.
    """

    name = ""

    def __init__(self, lr: float, weight_decay: float = 0.0, decay_bias_norm: bool = True):
        cls = type(self).__name__
        self.lr = positive_number(cls, "lr", lr)
        self.weight_decay = number(cls, "weight_decay", weight_decay, minimum=0)
        self.decay_bias_norm = boolean(cls, "decay_bias_norm", decay_bias_norm)
        # Set by the trainer when decay_bias_norm is False: per parameter array, whether
        # weight decay applies to it (the 1-D biases and norm parameters come last, exempt).
        self.decay_mask: list | None = None
        self.iterations = 0
        self._slots: list[tuple] | None = None  # per parameter: its slot arrays
        self._seen: list | None = None  # the (param, grad) arrays checked and given slots
        self._loaded: dict | None = None  # slots from load_state_dict, placed on the next step

    def slot_names(self) -> tuple:
        return ()

    def _update(self, param, grad, *slots) -> None:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay,
                "decay_bias_norm": self.decay_bias_norm}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -- the step ----------------------------------------------------------------------------
    def step(self, params: list, grads: list) -> None:
        """Update every ``params[i]`` in place from ``grads[i]``."""
        self._ready(params, grads)
        self.iterations += 1
        mask = self.decay_mask
        for i, (p, g, slots) in enumerate(zip(params, grads, self._slots or ())):
            if mask is not None and not mask[i] and self.weight_decay:
                decay, self.weight_decay = self.weight_decay, 0.0
                try:  # every _update reads self.weight_decay: exempt this array
                    self._update(p, g, *slots)
                finally:
                    self.weight_decay = decay
            else:
                self._update(p, g, *slots)

    def _ready(self, params, grads) -> None:
        """Check the arrays and give them slots, unless these very arrays passed before."""
        seen = self._seen
        if seen is None or len(params) != len(seen) or len(grads) != len(seen):
            self._prepare(params, grads)
            return
        for p, g, (sp, sg) in zip(params, grads, seen):
            if p is not sp or g is not sg:
                self._prepare(params, grads)
                return

    def _check_pair(self, p, g, i="") -> None:
        cls = type(self).__name__
        if not isinstance(p, np.ndarray) or p.dtype.char not in "fd" \
                or not p.flags.c_contiguous or not p.flags.writeable:
            raise DataError(f"{cls}: parameter {i} must be a writeable C-contiguous float32 or "
                            f"float64 array; received {describe_array(p)}")
        if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype != p.dtype \
                or not g.flags.c_contiguous:
            raise DataError(f"{cls}: gradient {i} must be a C-contiguous {p.dtype} array of "
                            f"shape {p.shape} like its parameter; received {describe_array(g)}")

    def _prepare(self, params, grads) -> None:
        """First step, or new parameter arrays: check them and find or make their slots."""
        cls = type(self).__name__
        if not isinstance(params, (list, tuple)) or not isinstance(grads, (list, tuple)) \
                or len(params) != len(grads):
            raise DataError(f"{cls}.step expects two lists of equal length (parameters, "
                            f"gradients); received {type(params).__name__} and "
                            f"{type(grads).__name__}")
        for i, (p, g) in enumerate(zip(params, grads)):
            self._check_pair(p, g, i)
        old = self._slots
        if self._loaded is not None:
            slots = self._place_loaded(params)
        elif old is not None and len(old) == len(params) and all(
                s.shape == p.shape and s.dtype == p.dtype
                for p, ss in zip(params, old) for s in ss):
            slots = old  # same layout in new arrays (a model made flat, say): keep the state
        else:
            slots = [tuple(np.zeros_like(p) for _ in self.slot_names()) for p in params]
        self._slots = slots
        self._seen = list(zip(params, grads))

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"name", "config", "step", "slots": {"<slot>.<i>": array}}``, arrays copied."""
        slots = {}
        if self._loaded is not None:
            slots = {k: v.copy() for k, v in self._loaded.items()}
        elif self._slots is not None:
            for i, arrays in enumerate(self._slots):
                for slot, a in zip(self.slot_names(), arrays):
                    slots[f"{slot}.{i}"] = a.copy()
        return {"name": self.name, "config": self.get_config(), "step": self.iterations,
                "slots": slots}

    def load_state_dict(self, state: dict) -> None:
        """Restore hyperparameters, step count and slots (placed on the next ``step``).

        As in PyTorch, the saved hyperparameters (``lr`` included) replace the current ones,
        so the resumed run continues exactly.
        """
        cls = type(self).__name__
        if not isinstance(state, dict) or not {"name", "config", "step", "slots"} <= set(state):
            raise CheckpointError(f"{cls}: optimizer state must have name, config, step and "
                                  f"slots; received {type(state).__name__}")
        if state["name"] != self.name:
            raise CheckpointError(f"{cls}: the saved optimizer state is for {state['name']!r}, "
                                  f"not {self.name!r}")
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise CheckpointError(f"{cls}: saved step must be an integer >= 0; received {step!r}")
        slots = dict(state["slots"])
        for key, value in slots.items():
            if not isinstance(value, np.ndarray) or value.dtype.char not in "fd":
                raise CheckpointError(f"{cls}: saved slot {key} must be a float array; "
                                      f"received {describe_array(value)}")
        mask = self.decay_mask
        try:
            self.__init__(**state["config"])  # type: ignore[misc]  # re-run with saved config
        except (TypeError, ConfigError) as exc:
            raise CheckpointError(f"{cls}: saved config does not fit: {exc}") from None
        self.iterations = int(step)
        self.decay_mask = mask if not self.decay_bias_norm else None
        self._loaded = {k: np.array(v) for k, v in slots.items()}

    def _place_loaded(self, params) -> list:
        cls = type(self).__name__
        loaded, self._loaded = self._loaded or {}, None
        expected = {f"{slot}.{i}" for i in range(len(params)) for slot in self.slot_names()}
        if loaded and set(loaded) != expected:
            raise CheckpointError(f"{cls}: saved slots {sorted(loaded)} do not fit "
                                  f"{len(params)} parameters (expected {sorted(expected)})")
        slots = []
        for i, p in enumerate(params):
            arrays = []
            for slot in self.slot_names():
                a = np.zeros_like(p)
                saved = loaded.get(f"{slot}.{i}")
                if saved is not None:
                    if saved.shape != p.shape:
                        raise CheckpointError(f"{cls}: saved slot {slot}.{i} has shape "
                                              f"{saved.shape}; parameter {i} has {p.shape}")
                    a[...] = saved
                arrays.append(a)
            slots.append(tuple(arrays))
        return slots


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    ``v = momentum * v + g``; ``p -= lr * v`` (or ``lr * (g + momentum * v)`` with Nesterov),
    where ``g`` includes ``weight_decay * p`` (Sutskever et al., ICML 2013).
    """

    name = "sgd"

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, decay_bias_norm: bool = True):
        super().__init__(lr, weight_decay, decay_bias_norm)
        self.momentum = fraction("SGD", "momentum", momentum)
        nesterov = boolean("SGD", "nesterov", nesterov)
        if nesterov and self.momentum == 0:
            raise ConfigError("SGD: nesterov=True needs momentum > 0; received momentum=0")
        self.nesterov = bool(nesterov)

    def slot_names(self):
        return ("velocity",) if self.momentum else ()

    def _update(self, param, grad, velocity=None):
        kernels.optim.sgd(param, grad, velocity, lr=self.lr, momentum=self.momentum,
                          nesterov=self.nesterov, weight_decay=self.weight_decay, check=False)

    def fused_update(self, param, grad):
        """``(velocity or None, lr, momentum, nesterov, weight_decay)``: what a kernel needs to
        make this step's update of ``param`` itself, as ``step([param], [grad])`` would (the
        arrays checked and given their slots here). The caller makes it with
        ``kernels.optim``'s own SGD kernel, elementwise, so the bits are ``step``'s, and then
        calls ``count_step``."""
        seen = self._seen  # the same pair as last step: _ready's checks, without its lists
        if seen is None or len(seen) != 1 or seen[0][0] is not param or seen[0][1] is not grad:
            self._ready([param], [grad])
        velocity = self._slots[0][0] if self.momentum else None
        return velocity, self.lr, self.momentum, self.nesterov, self.weight_decay

    def count_step(self) -> None:
        """A step made outside ``step`` (``fused_update``) counts as one."""
        self.iterations += 1

    def get_config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, "decay_bias_norm": self.decay_bias_norm}


class RMSProp(Optimizer):
    """RMSProp: divide the gradient by a running RMS of recent gradients (Hinton, 2012).

    ``s = alpha s + (1 - alpha) g^2``; ``u = g / (sqrt(s) + eps)``; ``p -= lr u``, or with
    momentum ``b = momentum b + u; p -= lr b``.
    """

    name = "rmsprop"

    def __init__(self, lr: float, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0,
                 decay_bias_norm: bool = True):
        super().__init__(lr, weight_decay, decay_bias_norm)
        self.alpha = fraction("RMSProp", "alpha", alpha)
        self.eps = positive_number("RMSProp", "eps", eps)
        self.momentum = fraction("RMSProp", "momentum", momentum)

    def slot_names(self):
        return ("square_avg", "momentum_buffer") if self.momentum else ("square_avg",)

    def _update(self, param, grad, square_avg, momentum_buffer=None):
        kernels.optim.rmsprop(param, grad, square_avg, momentum_buffer, lr=self.lr,
                              alpha=self.alpha, eps=self.eps, momentum=self.momentum,
                              weight_decay=self.weight_decay, check=False)

    def get_config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "decay_bias_norm": self.decay_bias_norm}


class Adam(Optimizer):
    """Adam with bias correction (Kingma and Ba, https://arxiv.org/abs/1412.6980).

    ``weight_decay`` is L2 regularisation added to the gradient; AdamW decouples it.
    """

    name = "adam"
    decoupled = False

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, decay_bias_norm: bool = True):
        super().__init__(lr, weight_decay, decay_bias_norm)
        cls = type(self).__name__
        self.beta1 = fraction(cls, "beta1", beta1)
        self.beta2 = fraction(cls, "beta2", beta2)
        self.eps = positive_number(cls, "eps", eps)

    def slot_names(self):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, param, grad, exp_avg, exp_avg_sq):
        kernels.optim.adam(param, grad, exp_avg, exp_avg_sq, lr=self.lr, step=self.iterations,
                           beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                           weight_decay=self.weight_decay, decoupled=self.decoupled,
                           check=False)

    def get_config(self):
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "decay_bias_norm": self.decay_bias_norm}


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p *= 1 - lr * weight_decay``, then the Adam step.

    Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
    https://arxiv.org/abs/1711.05101.
    """

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01, decay_bias_norm: bool = True):
        super().__init__(lr, beta1, beta2, eps, weight_decay, decay_bias_norm)


def clip_grad_norm(grads: list, max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping. A non-finite norm is returned without scaling, so the
    divergence stays visible to the stopping rules instead of being zeroed out.
    """
    max_norm = positive_number("clip_grad_norm", "max_norm", max_norm)
    total = math.sqrt(kernels.optim.squared_norm(grads))
    if math.isfinite(total) and total > max_norm:
        kernels.optim.scale_(grads, max_norm / (total + 1e-6))
    return total
