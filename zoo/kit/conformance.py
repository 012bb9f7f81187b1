"""The checks behind ``zoo.testing``: what every architecture, built-in or third-party, passes.

Each ``check_*`` function raises ``AssertionError`` with a message naming the architecture, the
data it was built for and what went wrong, so a failing check reads well in a pytest report.
The data are tiny synthetic ``DataSpec``s (a handful of features, time steps or pixels) so the
whole kit runs in seconds; pass your own ``spec`` where an architecture needs bigger inputs.

The checks, in the order ``check_architecture`` runs them:

- ``check_registration``: name, summary, tasks, data kinds, options and training defaults are
  well formed, every option's default parses back to itself, the default loss is registered.
- ``check_output_shapes``: the builder returns an unbuilt ``Layer``; built in float32 it maps a
  batch to ``(batch, output_size)`` (``(batch, *input_shape)`` when reconstructing), float32
  and finite, in a new array each call, without touching its input, the same for one example
  alone as in a batch;
  ``backward`` returns the input's shape and fills every parameter gradient, leaves the
  gradient each layer receives intact (in a layer graph one array reaches several layers),
  and overwrites ``Parameter.grad``: a second forward and backward of the same batch gives the
  same gradients (a backward adding into them passes a single run). Messages name the layer
  holding a parameter (``0.weight (in Dense(10))``).
- ``check_gradients``: float64 central differences of every parameter and of the input, in
  training mode, with each layer's random generator replayed so dropout masks stay fixed.
- ``check_determinism``: the same seed builds the same weights and the same outputs; another
  seed builds other weights.
- ``check_config``: options survive JSON and the command line (``-o key=value``), ``repr`` is
  one line and ``get_config()`` is JSON-serialisable for the model and each layer in it.
- ``check_checkpoint_round_trip``: the model's parameters and buffers, written with the
  options and data description to a checkpoint file and read back into a model built from
  that file's metadata with another seed, give bit-identical outputs.
- ``check_training``: two epochs of the real training loop on tiny random data: the loss is
  finite, the weights and the predictions move, every parameter still reaches the outputs once
  the trainer has moved it into its flat buffer (a layer that kept its own reference to a
  parameter array at build time stops seeing updates), the run saved by
  ``zoo.checkpoints``
  (as ``zoo train --save`` does) loads back into a model that predicts identically, and the
  same seed reproduces the run bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from zoo.architecture import Architecture, Option
from zoo.data.spec import KINDS, TASKS, DataSpec
from zoo.errors import PluginError
from zoo.jsonable import jsonable
from zoo.layers.base import Layer, Parameter
from zoo.plugins.host import resolve_host
from zoo.plugins.validate import DEFAULT_KEYS
from zoo.plugins.validate import check_registration as validate_registration

# Tiny shapes, one per kind of data: enough for a convolution, a pooling and a recurrence.
TINY_SHAPES = {"vector": (8,), "sequence": (6, 2), "image": (1, 8, 8)}
TINY_CLASSES = 3
TINY_TARGETS = 2

# The training defaults an architecture may set (what zoo.run reads from ``defaults``).
TRAINING_DEFAULTS = DEFAULT_KEYS

# Finite differences sample this many entries of each parameter (and of the input): enough to
# catch a wrong formula, few enough that a model's check takes well under a second.
GRADIENT_ENTRIES = 24


# -- finding the architecture and its data ----------------------------------------------------
def get_architecture(name_or_architecture, host=None) -> Architecture:
    """An ``Architecture`` as given, or the one installed under that name."""
    if isinstance(name_or_architecture, Architecture):
        return name_or_architecture
    if not isinstance(name_or_architecture, str):
        raise TypeError("expected an architecture name or an Architecture; received "
                        f"{type(name_or_architecture).__name__}")
    host = resolve_host(host)
    return host.architectures.get(name_or_architecture)


def tiny_spec(kind: str, task: str = "classify", *, input_shape: tuple | None = None) -> DataSpec:
    """A small ``DataSpec`` for ``kind`` data and ``task`` (3 classes, 2 regression targets)."""
    shape = tuple(input_shape or TINY_SHAPES[kind])
    spec = DataSpec(shape, kind, "classify", TINY_CLASSES, TINY_CLASSES, f"tiny-{kind}")
    if task == "regress":
        return DataSpec(shape, kind, "regress", TINY_TARGETS, None, f"tiny-{kind}")
    return spec.with_task(task)


def specs_for(arch: Architecture, kinds=None, tasks=None) -> list[DataSpec]:
    """One tiny spec per (kind, task) the architecture claims, restricted to ``kinds``/``tasks``."""
    claimed_kinds = tuple(arch.data_kinds)
    kinds = claimed_kinds if kinds is None else tuple(kinds)
    unclaimed = [k for k in kinds if k not in claimed_kinds]
    if unclaimed:
        raise AssertionError(f"{arch.name}: asked to check {', '.join(unclaimed)} data, but its "
                             f"data_kinds are {', '.join(claimed_kinds)}")
    tasks = tuple(arch.tasks) if tasks is None else tuple(tasks)
    return [tiny_spec(kind, task) for kind in kinds for task in tasks]


def _where(arch: Architecture, spec: DataSpec) -> str:
    return f"{arch.name} on {spec.kind} data {spec.input_shape} ({spec.task})"


def expected_output_shape(spec: DataSpec) -> tuple:
    """What a model built for ``spec`` must return for one example."""
    return spec.input_shape if spec.task == "reconstruct" else (spec.output_size,)


def build_model(arch: Architecture, spec: DataSpec, options=None, *, seed: int = 0,
                dtype=np.float32) -> Layer:
    """Build ``arch`` for ``spec`` exactly as ``zoo train`` does (same generator, same dtype)."""
    resolved = arch.resolve_options(options)
    model = arch.build(spec, dict(resolved))
    if not isinstance(model, Layer):
        raise AssertionError(f"{_where(arch, spec)}: build(spec, options) must return a zoo "
                             f"Layer (such as Sequential); received {type(model).__name__}")
    model.build(spec.input_shape, np.random.default_rng([seed, 1]), dtype=dtype)
    return model


def iter_layers(layer: Layer):
    """``layer`` and every layer inside it, depth first.

    Children are found in attributes holding a Layer or a list/tuple of Layers, which covers
    ``Sequential`` and containers written the same way.
    """
    seen = set()
    stack = [layer]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        children = []
        for value in vars(current).values():
            if isinstance(value, Layer):
                children.append(value)
            elif isinstance(value, (list, tuple)):
                children += [v for v in value if isinstance(v, Layer)]
        stack += reversed(children)


def _inputs(spec: DataSpec, batch: int, seed: int, dtype) -> np.ndarray:
    return np.random.default_rng([seed, 7]).standard_normal((batch, *spec.input_shape)) \
        .astype(dtype)


# -- the checks --------------------------------------------------------------------------------
def check_registration(name_or_architecture, *, host=None) -> Architecture:
    """The registered description is well formed; returns the architecture."""
    arch = get_architecture(name_or_architecture, host)
    name = arch.name
    problems = []
    if not isinstance(name, str) or not name or any(c.isspace() or c in ",=" for c in name):
        problems.append(f"name must be a non-empty word without spaces, ',' or '='; "
                        f"received {name!r}")
    if not isinstance(arch.summary, str) or not arch.summary.strip() or "\n" in arch.summary:
        problems.append(f"summary must be one non-empty line; received {arch.summary!r}")
    if not arch.tasks or any(t not in TASKS for t in arch.tasks):
        problems.append(f"tasks must be a non-empty subset of {', '.join(TASKS)}; "
                        f"received {arch.tasks!r}")
    if not arch.data_kinds or any(k not in KINDS for k in arch.data_kinds):
        problems.append(f"data_kinds must be a non-empty subset of {', '.join(KINDS)}; "
                        f"received {arch.data_kinds!r}")
    if not callable(arch.build):
        problems.append("build must be callable as build(spec, options)")
    seen = set()
    for opt in arch.options:
        if not isinstance(opt, Option):
            problems.append(f"options must be Option instances; received {opt!r}")
            continue
        if opt.name in seen:
            problems.append(f"option {opt.name!r} is declared twice")
        seen.add(opt.name)
        if not opt.help:
            problems.append(f"option {opt.name!r} has no help text")
        try:
            if opt.parse(opt.default) != opt.default:
                problems.append(f"option {opt.name!r}: default {opt.default!r} parses to "
                                f"{opt.parse(opt.default)!r}; declare the parsed value")
        except Exception as exc:
            problems.append(f"option {opt.name!r}: default {opt.default!r} is not valid: {exc}")
    unknown = sorted(set(arch.defaults) - set(TRAINING_DEFAULTS))
    if unknown:
        problems.append(f"defaults has unknown keys {unknown}; known: "
                        f"{sorted(TRAINING_DEFAULTS)}")
    if not problems:  # never more lenient than the plugin host, which would refuse it
        try:
            validate_registration("architectures", "architecture", arch, None, ())
        except PluginError as exc:
            problems.append(str(exc))
    if problems:
        raise AssertionError(f"architecture {name!r}: " + "; ".join(problems))

    host = resolve_host(host)
    from zoo import spec as specs
    from zoo.errors import ConfigError

    # Default optimizer, loss and schedule are specs; each must name a registered thing
    # with settings it accepts.
    for key, registry, kind in (("optimizer", host.optimizers, specs.OPTIMIZER),
                                ("loss", host.losses, specs.LOSS),
                                ("schedule", host.schedules, specs.SCHEDULE)):
        text = arch.defaults.get(key)
        if text is None:
            continue
        try:
            parsed = specs.parse_spec(text, registry, kind)
            if key == "schedule":
                parsed.build(kind, text)
        except ConfigError as exc:
            raise AssertionError(f"architecture {name!r}: defaults[{key!r}]: {exc}") from None
    options = arch.resolve_options()
    for kind in arch.data_kinds:
        for task in arch.tasks:
            spec = tiny_spec(kind, task)
            loss = arch.default_loss(spec, options)
            try:
                specs.parse_spec(loss, host.losses, specs.LOSS)
            except ConfigError as exc:
                raise AssertionError(f"{_where(arch, spec)}: its loss {loss!r} is not a "
                                     f"registered loss spec: {exc}") from None
    return arch


def check_output_shapes(arch, spec: DataSpec, options=None, *, seed: int = 0,
                        batch: int = 3, host=None) -> Layer:
    """Build in float32 and run forward and backward on a batch; returns the built model."""
    arch = get_architecture(arch, host)
    where = _where(arch, spec)
    model = arch.build(spec, dict(arch.resolve_options(options)))
    if isinstance(model, Layer) and model.built:
        raise AssertionError(f"{where}: build(spec, options) must return an unbuilt model; "
                             "zoo builds it for the input shape and dtype")
    model = build_model(arch, spec, options, seed=seed)
    expected = expected_output_shape(spec)
    if tuple(model.output_shape or ()) != expected:
        raise AssertionError(f"{where}: the built model's output_shape is "
                             f"{model.output_shape}; expected {expected}")
    x = _inputs(spec, batch, seed, np.float32)
    x_before = x.copy()
    y = model.forward(x, training=False)
    if not isinstance(y, np.ndarray) or y.shape != (batch, *expected):
        raise AssertionError(f"{where}: forward of a {x.shape} batch returned "
                             f"{getattr(y, 'shape', type(y).__name__)}; expected "
                             f"{(batch, *expected)}")
    if y.dtype != np.float32:
        raise AssertionError(f"{where}: a float32 model returned {y.dtype} outputs")
    if not np.isfinite(y).all():
        raise AssertionError(f"{where}: forward returned NaN or Inf on standard normal inputs")
    if not np.array_equal(x, x_before):
        raise AssertionError(f"{where}: forward modified its input in place")
    kept = y.copy()
    model.forward(_inputs(spec, batch, seed + 1, np.float32), training=False)
    if not np.array_equal(y, kept):
        raise AssertionError(f"{where}: the next forward call overwrote the array forward "
                             "returned; callers keep outputs (predict collects them), so the "
                             "last layer must return a new array each call")
    alone = model.forward(np.ascontiguousarray(x[:1]), training=False)
    if not np.allclose(alone, y[:1], rtol=1e-4, atol=1e-5):
        raise AssertionError(f"{where}: in inference mode the first example gives other "
                             "outputs alone than in a batch (largest difference "
                             f"{np.max(np.abs(alone - y[:1])):.3g}); examples must not mix")

    generators = _generator_states(model)
    out = model.forward(x, training=True)
    with _watching_received_gradients(model, where):
        grad_in = model.backward(np.ones_like(out))
    if not isinstance(grad_in, np.ndarray) or grad_in.shape != x.shape:
        raise AssertionError(f"{where}: backward returned "
                             f"{getattr(grad_in, 'shape', type(grad_in).__name__)}; expected "
                             f"the input's shape {x.shape}")
    if not np.array_equal(x, x_before):
        raise AssertionError(f"{where}: forward or backward modified the input in place")
    _check_parameters(model, where)
    for name, p in model.named_parameters():
        if not np.isfinite(p.grad).all():
            raise AssertionError(f"{where}: parameter {_named(model, name)} has a NaN or Inf "
                                 "gradient")
    _check_backward_overwrites(model, x, generators, where)
    return model


class _watching_received_gradients:
    """While active, every layer's backward checks it left the gradient it received intact.

    In a layer graph one gradient array reaches several layers (``Add`` hands its output's
    gradient to each input), so a layer that scales it in place corrupts its neighbours'.
    """

    def __init__(self, model: Layer, where: str):
        # Only layers whose backward is a method: one set on the instance is left alone.
        self.layers = [layer for layer in iter_layers(model) if "backward" not in vars(layer)]
        self.where = where

    def __enter__(self):
        for layer in self.layers:
            layer.backward = self._watched(layer, layer.backward)

    def __exit__(self, *exc):
        for layer in self.layers:
            del layer.backward  # the class's method again
        return False

    def _watched(self, layer, backward):
        def watched(grad_out):
            received = [g.copy() for g in _arrays(grad_out)]
            grad_in = backward(grad_out)
            if any(not np.array_equal(g, r, equal_nan=True)
                   for g, r in zip(_arrays(grad_out), received)):
                raise AssertionError(f"{self.where}: backward of {layer!r} modified the gradient "
                                     "it received in place; in a layer graph the same gradient "
                                     "array reaches several layers")
            return grad_in

        return watched


def _arrays(value) -> list:
    items = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in items if isinstance(v, np.ndarray)]


def _generator_states(model: Layer) -> list:
    """Every layer's random generator with its current state, to replay a forward pass."""
    return [(layer.rng, layer.rng.bit_generator.state) for layer in iter_layers(model)
            if isinstance(getattr(layer, "rng", None), np.random.Generator)]


def _named(model: Layer, name: str) -> str:
    """A parameter's dotted name and the layer holding it: ``3.weight (in Dense(10))``."""
    from zoo.kit.gradcheck import parameter_owners

    param = dict(model.named_parameters()).get(name)
    owner = parameter_owners(model).get(id(param))
    return f"{name} (in {owner!r})" if owner is not None and owner is not model else name


def _check_backward_overwrites(model: Layer, x: np.ndarray, generators: list,
                               where: str) -> None:
    """The same batch through forward and backward again gives the same parameter gradients.

    A backward that adds into ``Parameter.grad`` instead of overwriting it gives the right
    gradient once (the trainer zeroes nothing) and twice the gradient the second time.
    """
    first = {name: p.grad.copy() for name, p in model.named_parameters()}
    for rng, state in generators:  # dropout draws the same mask again
        rng.bit_generator.state = state
    out = model.forward(x.copy(), training=True)
    model.backward(np.ones_like(out))
    for name, p in model.named_parameters():
        scale = float(np.max(np.abs(first[name]), initial=0.0))
        if not np.allclose(p.grad, first[name], rtol=1e-4, atol=1e-6 * (scale + 1)):
            raise AssertionError(
                f"{where}: a second forward and backward of the same batch changed the gradient "
                f"of parameter {_named(model, name)} (largest difference "
                f"{np.max(np.abs(p.grad - first[name])):.3g}); backward must overwrite "
                "Parameter.grad (grad[...] = or out=), not add into it")


def _check_parameters(model: Layer, where: str) -> None:
    named = model.named_parameters()
    names = [name for name, _ in named]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AssertionError(f"{where}: parameter names must be unique; repeated: {duplicates}")
    buffer_names = [name for name, _ in model.named_buffers()]
    if len(set(buffer_names)) != len(buffer_names) or set(buffer_names) & set(names):
        raise AssertionError(f"{where}: buffer names must be unique and differ from parameter "
                             f"names; received {buffer_names}")
    if {id(p) for _, p in named} != {id(p) for p in model.parameters()}:
        raise AssertionError(f"{where}: parameters() and named_parameters() disagree; a "
                             "container must override both (see Sequential)")
    for name, p in named:
        if not isinstance(p, Parameter):
            raise AssertionError(f"{where}: {name} is a {type(p).__name__}, not a Parameter")
        if p.value.dtype != model.dtype or p.grad.shape != p.value.shape \
                or p.grad.dtype != p.value.dtype:
            raise AssertionError(f"{where}: parameter {_named(model, name)} has value "
                                 f"{p.value.dtype} {p.value.shape} and grad {p.grad.dtype} "
                                 f"{p.grad.shape}; "
                                 f"expected both {np.dtype(model.dtype)} of one shape")


class _Replay(Layer):
    """The model, with every layer's random generator rewound before each forward pass.

    A finite-difference check calls forward many times; dropout must draw the same mask each
    time for the differences to mean anything, and in training mode it would not.
    """

    def __init__(self, model: Layer):
        super().__init__("replay")
        self.model = model
        self.dtype = model.dtype
        self.built = True
        self.input_shape, self.output_shape = model.input_shape, model.output_shape
        self._rngs = _generator_states(model)

    def forward(self, x, training=False):
        for rng, state in self._rngs:
            rng.bit_generator.state = state
        return self.model.forward(x, training)

    def backward(self, grad_out):
        return self.model.backward(grad_out)

    def named_parameters(self, prefix=""):
        return self.model.named_parameters(prefix)

    def parameters(self):
        return self.model.parameters()


def check_gradients(arch, spec: DataSpec, options=None, *, seed: int = 0, batch: int = 2,
                    training: bool = True, max_entries: int = GRADIENT_ENTRIES,
                    atol: float = 1e-6, rtol: float = 1e-5, host=None) -> None:
    """Float64 finite differences of every parameter (and of the input) of the whole model.

    Up to ``max_entries`` entries of each array are perturbed; every parameter is covered.
    """
    from zoo.kit.gradcheck import check_layer

    arch = get_architecture(arch, host)
    model = build_model(arch, spec, options, seed=seed, dtype=np.float64)
    for name, p in model.named_parameters():
        if p.value.dtype != np.float64:
            raise AssertionError(f"{_where(arch, spec)}: built in float64, parameter "
                                 f"{_named(model, name)} is {p.value.dtype}; set each layer's "
                                 "dtype before building it")
    try:
        check_layer(_Replay(model), spec.input_shape, batch=batch, seed=seed, training=training,
                    max_entries=max_entries, atol=atol, rtol=rtol,
                    label=type(model).__name__)
    except AssertionError as exc:
        raise AssertionError(f"{_where(arch, spec)}: {exc}") from None


def _weights(model: Layer) -> dict:
    state = {name: p.value.copy() for name, p in model.named_parameters()}
    state.update({name: np.array(b, copy=True) for name, b in model.named_buffers()})
    return state


def check_determinism(arch, spec: DataSpec, options=None, *, seed: int = 0,
                      host=None) -> None:
    """Same seed: same weights and outputs (training mode too); another seed: other weights."""
    arch = get_architecture(arch, host)
    where = _where(arch, spec)
    x = _inputs(spec, 3, seed, np.float32)
    runs = []
    for s in (seed, seed, seed + 1):
        model = build_model(arch, spec, options, seed=s)
        runs.append((_weights(model), model.forward(x.copy(), training=True),
                     model.forward(x.copy(), training=False)))
    (w0, train0, eval0), (w1, train1, eval1), (w2, _, _) = runs
    for name in w0:
        if not np.array_equal(w0[name], w1[name]):
            raise AssertionError(f"{where}: the same seed built different values of "
                                 f"{_named(model, name)}; draw initial values from the "
                                 "generator build() receives")
    if not np.array_equal(train0, train1) or not np.array_equal(eval0, eval1):
        raise AssertionError(f"{where}: the same seed gives different outputs; a layer that "
                             "draws random numbers must keep a Generator made in build()")
    for name, _ in model.named_parameters():
        # Only values that look drawn (mostly distinct) must change with the seed: constant
        # or patterned initial values (zero biases, an LSTM's forget-gate ones) need not.
        drawn = len(np.unique(w0[name])) > max(2, w0[name].size // 2)
        if drawn and np.array_equal(w0[name], w2[name]):
            raise AssertionError(f"{where}: seeds {seed} and {seed + 1} build identical values "
                                 f"of {_named(model, name)}; initial values must come from "
                                 "the generator build() receives")


def _command_line(value) -> str:
    """How a user types ``value`` after ``-o name=``."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _one_line_repr(obj, where: str) -> str:
    text = repr(obj)
    if not text or "\n" in text or " object at 0x" in text:
        raise AssertionError(f"{where}: repr() must be one informative line; received {text!r}")
    return text


def check_config(arch, spec: DataSpec, options=None, *, host=None) -> None:
    """Options round-trip through JSON and ``-o``; reprs and configs are sane and stable."""
    arch = get_architecture(arch, host)
    where = _where(arch, spec)
    resolved = arch.resolve_options(options)
    try:
        as_json = json.loads(json.dumps(jsonable(resolved)))
    except TypeError as exc:
        raise AssertionError(f"{where}: options {resolved} are not JSON-serialisable (a "
                             f"checkpoint stores them as JSON): {exc}") from None
    if arch.resolve_options(as_json) != resolved:
        raise AssertionError(f"{where}: options {resolved} do not survive JSON (a checkpoint "
                             f"stores them that way): read back as {arch.resolve_options(as_json)}")
    typed = {name: _command_line(value) for name, value in resolved.items()}
    if arch.resolve_options(typed) != resolved:
        raise AssertionError(f"{where}: options {resolved} typed as -o {typed} parse to "
                             f"{arch.resolve_options(typed)}")
    first, second = (build_model(arch, spec, options) for _ in range(2))
    _one_line_repr(first, where)
    configs = []
    for model in (first, second):
        configs.append([(type(layer).__name__, layer.get_config()) for layer in iter_layers(model)])
    for layer in iter_layers(first):
        at = f"{where}: {type(layer).__name__}"
        _one_line_repr(layer, at)
        config = layer.get_config()
        if not isinstance(config, dict):
            raise AssertionError(f"{at}.get_config() must return a dict; received "
                                 f"{type(config).__name__}")
        try:
            json.dumps(jsonable(config))
        except TypeError as exc:
            raise AssertionError(f"{at}.get_config() is not JSON-serialisable: {exc}") from None
    if configs[0] != configs[1]:
        raise AssertionError(f"{where}: the same options built models with different configs")


def model_state(model: Layer) -> dict:
    """Every parameter and buffer by dotted name (``state_dict()`` where the model has one)."""
    if hasattr(model, "state_dict"):
        return model.state_dict()
    return _weights(model)


def load_model_state(model: Layer, state: dict) -> None:
    """Copy ``state`` into ``model`` (``load_state_dict()`` where the model has one)."""
    if hasattr(model, "load_state_dict"):
        model.load_state_dict(state)
        return
    targets = {name: p.value for name, p in model.named_parameters()}
    targets.update(dict(model.named_buffers()))
    if set(targets) != set(state):
        raise AssertionError(f"state names {sorted(state)} do not match the model's "
                             f"{sorted(targets)}")
    for name, target in targets.items():
        target[...] = state[name]


def check_checkpoint_round_trip(arch, spec: DataSpec, options=None, *, seed: int = 0,
                                folder=None, host=None) -> None:
    """Save parameters, buffers, options and spec to a file; rebuild from it; same outputs.

    The file is a zoo checkpoint (``zoo.checkpoints.format``). The model is rebuilt from the
    file's metadata alone with another seed, so nothing but the file carries the weights across.
    """
    from zoo.checkpoints.format import read_checkpoint, write_checkpoint

    arch = get_architecture(arch, host)
    where = _where(arch, spec)
    resolved = arch.resolve_options(options)
    model = build_model(arch, spec, resolved, seed=seed)
    x = _inputs(spec, 3, seed, np.float32)
    # A few training passes move running statistics (buffers) away from their initial values.
    for _ in range(2):
        model.forward(x.copy(), training=True)
    expected = model.forward(x.copy(), training=False)
    state = model_state(model)
    metadata = {"arch": arch.name, "options": resolved, "spec": spec.to_dict()}
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = os.path.join(tmp, "model.safetensors")
        write_checkpoint(path, state, metadata)
        tensors, meta = read_checkpoint(path)
        tensors = {k: np.array(v) for k, v in tensors.items()}
    for name, value in state.items():
        if name not in tensors or tensors[name].dtype != value.dtype \
                or not np.array_equal(tensors[name], value):
            raise AssertionError(f"{where}: {name} did not survive the checkpoint file")
    restored_spec = DataSpec.from_dict(meta["spec"])
    restored_options = arch.resolve_options(meta["options"])
    if restored_spec != spec or restored_options != resolved:
        raise AssertionError(f"{where}: options or data description changed through the "
                             f"checkpoint: {restored_options} {restored_spec}")
    clone = build_model(arch, restored_spec, restored_options, seed=seed + 1)
    try:
        load_model_state(clone, tensors)
    except Exception as exc:
        raise AssertionError(f"{where}: loading the saved state failed: {exc}") from None
    got = clone.forward(x.copy(), training=False)
    if not np.array_equal(got, expected):
        raise AssertionError(f"{where}: a model loaded from a checkpoint gives other outputs "
                             f"(largest difference {np.max(np.abs(got - expected)):.3g}); is "
                             "some state missing from named_parameters()/named_buffers()?")


class _HostWith:
    """The plugin host, with ``arch`` resolvable by name even if it is not installed."""

    def __init__(self, host, arch: Architecture):
        self._host = host
        self._arch = arch

    def __getattr__(self, name):
        value = getattr(self._host, name)
        if name == "architectures":
            return _OneMore(value, self._arch)
        return value


class _OneMore:
    def __init__(self, registry, arch):
        self._registry, self._arch = registry, arch

    def get(self, name):
        return self._arch if name == self._arch.name else self._registry.get(name)


def tiny_dataset(spec: DataSpec, *, examples: int = 24, seed: int = 0):
    """A random ``Dataset`` fitting ``spec`` (labels for classify, targets for regress)."""
    from zoo.data.dataset import Dataset

    rng = np.random.default_rng([seed, 11])
    x_train = rng.standard_normal((examples, *spec.input_shape))
    x_test = rng.standard_normal((examples // 2, *spec.input_shape))
    y_train: np.ndarray
    y_test: np.ndarray
    if spec.task == "classify":
        y_train = np.arange(examples) % spec.output_size
        y_test = np.arange(examples // 2) % spec.output_size
    elif spec.task == "regress":
        y_train = rng.standard_normal((examples, spec.output_size))
        y_test = rng.standard_normal((examples // 2, spec.output_size))
    else:
        y_train = np.arange(examples) % TINY_CLASSES
        y_test = np.arange(examples // 2) % TINY_CLASSES
    task = "classify" if spec.task == "reconstruct" else spec.task
    return Dataset(spec.name or "tiny", spec.kind, task, x_train, y_train, x_test, y_test)


STALE_HINT = ("does a layer keep its own reference to a parameter array? The trainer moves "
              "every parameter into one flat buffer; read them through Parameter.value at call "
              "time")


def _check_parameters_reach_outputs(model: Layer, x: np.ndarray, where: str) -> None:
    """Shifting any parameter, as the optimizer sees it, changes the model's outputs."""
    base = model.forward(x.copy(), training=False).copy()
    rng = np.random.default_rng(3)
    for name, p in model.named_parameters():
        saved = p.value.copy()
        p.value += (0.1 * (np.abs(saved).max() + 1) * rng.standard_normal(saved.shape)) \
            .astype(saved.dtype)
        moved = model.forward(x.copy(), training=False)
        p.value[...] = saved
        if np.array_equal(moved, base):
            raise AssertionError(f"{where}: after training, changing parameter "
                                 f"{_named(model, name)} does not change the outputs; "
                                 f"{STALE_HINT}")


def _check_saved_run(run, host, expected: np.ndarray, where: str) -> None:
    """``zoo train --save`` then ``zoo evaluate``: the saved run's model predicts the same."""
    from zoo.checkpoints.checkpoint import load_model, save_run

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.ckpt")
        try:
            save_run(run, path)
            model, _, _, _ = load_model(path, host=host)
        except Exception as exc:
            raise AssertionError(f"{where}: saving the trained run with zoo.checkpoints and "
                                 f"loading it back failed: {type(exc).__name__}: {exc}") from None
    got = model.forward(run.x_train[:4].copy(), training=False)
    if not np.array_equal(got, expected):
        raise AssertionError(f"{where}: the model loaded from a saved run predicts otherwise "
                             f"(largest difference {np.max(np.abs(got - expected)):.3g})")


def check_training(arch, spec: DataSpec, options=None, *, seed: int = 0, epochs: int = 2,
                   host=None) -> dict:
    """Train twice for ``epochs`` epochs with the real loop; returns the first run's result."""
    from zoo.run import Run, RunConfig

    arch = get_architecture(arch, host)
    where = _where(arch, spec)
    host = resolve_host(host)
    host = _HostWith(host, arch)
    dataset = tiny_dataset(spec, seed=seed)
    if spec.task == "reconstruct" and "reconstruct" not in arch.tasks:
        raise AssertionError(f"{where}: reconstruct is not among its tasks")
    results, weights, predictions = [], [], []
    for attempt in range(2):
        # An explicit --stop budget: no early stopping to restore earlier weights.
        config = RunConfig(arch=arch.name, dataset=dataset.name, options=dict(options or {}),
                           batch_size=8, seed=seed, stop=(f"max_epochs={epochs}",))
        run = Run(config, host=host, dataset=dataset)
        before = run.model.forward(run.x_train[:4].copy(), training=False).copy()
        start = _weights(run.model)
        run.fit()
        after = run.model.forward(run.x_train[:4].copy(), training=False)
        result = run.result()
        results.append(result)
        weights.append(_weights(run.model))
        predictions.append(after.copy())
        if not math.isfinite(result.train_loss):
            raise AssertionError(f"{where}: training loss is {result.train_loss}")
        if all(np.array_equal(start[n], weights[-1][n]) for n, _ in run.model.named_parameters()):
            raise AssertionError(f"{where}: {epochs} epochs of training left every weight as "
                                 "it was")
        if np.array_equal(before, after):
            raise AssertionError(f"{where}: training changed the weights but not the "
                                 f"predictions; {STALE_HINT}")
        _check_parameters_reach_outputs(run.model, run.x_train[:4], where)
        if attempt == 0:
            _check_saved_run(run, host, after, where)
    first, second = weights
    if any(not np.array_equal(first[n], second[n]) for n in first) \
            or not np.array_equal(*predictions) \
            or results[0].train_loss != results[1].train_loss:
        raise AssertionError(f"{where}: two runs with seed {seed} ended with different weights "
                             "or losses; training must be deterministic given the seed")
    return results[0].to_dict()


CHECKS: dict[str, Callable[..., Any]] = {
    "shapes": check_output_shapes,
    "gradients": check_gradients,
    "determinism": check_determinism,
    "config": check_config,
    "checkpoint": check_checkpoint_round_trip,
    "training": check_training,
}


def check_architecture(name_or_architecture, *, kinds=None, tasks=None, options=None,
                       specs=None, checks=None, seed: int = 0, host=None) -> list[str]:
    """Run every conformance check on an architecture; returns what was checked.

    Args:
        name_or_architecture: an installed architecture's name, or an ``Architecture``
            (checked even if it is not installed).
        kinds: the kinds of data to build for (default: every kind the architecture claims).
        tasks: the tasks to check (default: every task it supports).
        options: architecture options (default: its defaults).
        specs: your own ``DataSpec``s instead of the tiny ones made from ``kinds``/``tasks``.
        checks: names from ``CHECKS`` to run (default: all). Shapes and configs are checked
            for every spec; the costlier checks for the first task of each kind.

    Raises:
        AssertionError: naming the architecture, the data and the first problem found.

    Example:
        >>> from zoo.testing import check_architecture
        >>> check_architecture("mlp", kinds=["vector"])
        ['registration', 'vector/classify: shapes', ...]
    """
    arch = check_registration(name_or_architecture, host=host)
    if checks is None:
        checks = tuple(CHECKS)
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")
    specs = list(specs) if specs is not None else specs_for(arch, kinds, tasks)
    done = ["registration"]
    seen_kinds = set()
    for spec in specs:
        label = f"{spec.kind}/{spec.task}"
        first_of_kind = spec.kind not in seen_kinds
        seen_kinds.add(spec.kind)
        for check in checks:
            if check not in ("shapes", "config") and not first_of_kind:
                continue
            fn = CHECKS[check]
            try:
                if check == "config":
                    fn(arch, spec, options, host=host)
                else:
                    fn(arch, spec, options, seed=seed, host=host)
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(f"{_where(arch, spec)}: {check} check raised "
                                     f"{type(exc).__name__}: {exc}") from exc
            done.append(f"{label}: {check}")
    return done


def check_plugin(plugin_name: str, *, host=None, losses=None, criteria=None,
                 **kwargs) -> dict:
    """An installed plugin loaded without problems; everything it registered conforms.

    Architectures go through ``check_architecture`` (extra keyword arguments go to it);
    optimizers, datasets, schedules and metrics through their ``zoo.kit.components`` check.
    A loss is checked on regression targets unless ``losses`` maps its name to a task
    (``{"focal": "classify"}``); a criterion needs a spec to be built from, given in
    ``criteria`` (``{"max_loss": "max_loss=10"}``), else it is checked with its defaults.

    Returns ``{name: [what was checked]}``.
    """
    host = resolve_host(host)
    record = host.records.get(plugin_name)
    if record is None:
        installed = ", ".join(sorted(r.name for r in host.records.values() if not r.builtin))
        raise AssertionError(f"no plugin named {plugin_name!r} is installed (entry point group "
                             f"'zoo'); installed: {installed or 'none'}")
    if record.error:
        raise AssertionError(f"plugin {plugin_name} did not load: {record.error}")
    from zoo.kit import components

    registered = record.registered
    done = {name: check_architecture(name, host=host, **kwargs)
            for name in registered.get("architectures", [])}
    for name in registered.get("optimizers", []):
        done[name] = components.check_optimizer(name, host=host)
    for name in registered.get("losses", []):
        done[name] = components.check_loss(name, task=(losses or {}).get(name, "regress"),
                                           host=host)
    for name in registered.get("datasets", []):
        done[name] = components.check_dataset(name, host=host)
    for name in registered.get("criteria", []):
        done[name] = components.check_criterion((criteria or {}).get(name, name), host=host)
    for name in registered.get("schedules", []):
        done[name] = components.check_schedule(name, host=host)
    for name in registered.get("metrics", []):
        done[name] = components.check_metric(name, host=host)
    return done
