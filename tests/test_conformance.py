"""zoo.testing: every built-in architecture passes the kit, and the kit catches real mistakes."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from zoo.architecture import Architecture, Option
from zoo.kit import conformance
from zoo.kit.gradcheck import check_layer
from zoo.layers.base import Layer
from zoo.model import Sequential


def _builtin_architectures() -> list[str]:
    """Architectures registered by zoo's own plugins (``zoo_plugins.*``) that load."""
    from zoo.plugins import PluginHost

    host = PluginHost(strict=False, load=None)
    return sorted(name for record in host.records.values()
                  if (record.module or "").startswith("zoo_plugins.") and not record.error
                  for name in record.registered.get("architectures", []))


# Options that set a width are made small so the whole kit runs in seconds per architecture.
WIDTHS = {"hidden", "width", "units", "channels", "latent", "code_size"}


def tiny_options(arch) -> dict:
    options = {}
    for opt in arch.options:
        if opt.name in WIDTHS and opt.type == "ints":
            options[opt.name] = tuple(min(v, 6) for v in opt.default)
        elif opt.name in WIDTHS and opt.type is int:
            options[opt.name] = min(opt.default, 6)
    return options


def variant_options(arch) -> dict:
    """Every boolean option flipped and dropout on: the code paths the defaults skip."""
    options = tiny_options(arch)
    for opt in arch.options:
        if opt.type is bool:
            options[opt.name] = not opt.default
        elif opt.name == "dropout":
            options[opt.name] = 0.25
    return options


@pytest.mark.parametrize("arch", _builtin_architectures())
def test_builtin_architecture_conforms(arch, fresh_host):
    architecture = fresh_host.get_host().architectures.get(arch)
    done = conformance.check_architecture(arch, options=tiny_options(architecture))
    for kind in architecture.data_kinds:
        for check in ("shapes", "gradients", "determinism", "config", "checkpoint", "training"):
            assert any(entry.startswith(f"{kind}/") and entry.endswith(check) for entry in done)


@pytest.mark.parametrize("arch", _builtin_architectures())
def test_builtin_architecture_variant_conforms(arch, fresh_host):
    architecture = fresh_host.get_host().architectures.get(arch)
    kind = "sequence" if "sequence" in architecture.data_kinds else architecture.data_kinds[0]
    conformance.check_architecture(arch, kinds=[kind], tasks=architecture.tasks[:1],
                                   options=variant_options(architecture),
                                   checks=["shapes", "gradients", "checkpoint"])


# -- a small correct layer, and broken variants of it -----------------------------------------
class Lin(Layer):
    """y = tanh?(x W + b) on flattened inputs: a stand-in for Dense that the tests control."""

    def __init__(self, units, tanh=False, name=None):
        super().__init__(name)
        self.units, self.tanh = units, tanh

    def build(self, input_shape, rng):
        fan_in = int(np.prod(input_shape))
        self.weight = self.add_parameter("weight", self.init(rng, (fan_in, self.units)))
        self.bias = self.add_parameter("bias", np.zeros(self.units))
        self.input_shape, self.output_shape, self.built = tuple(input_shape), (self.units,), True
        return self.output_shape

    def init(self, rng, shape):
        return rng.standard_normal(shape) / np.sqrt(shape[0])

    def forward(self, x, training=False):
        self._shape = x.shape
        self._x = x.reshape(len(x), -1)
        z = self._x @ self.weight.value + self.bias.value
        if self.tanh:
            z = self._z = np.tanh(z)
        return z

    def backward(self, grad_out):
        g = grad_out * (1 - self._z ** 2) if self.tanh else grad_out
        self.weight.grad[...] = self._x.T @ g
        self.bias.grad[...] = self.bias_grad(g)
        return (g @ self.weight.value.T).reshape(self._shape)

    def bias_grad(self, g):
        return g.sum(axis=0)

    def get_config(self):
        return {"units": self.units, "tanh": self.tanh}


WIDTH = (Option("width", int, 5, "hidden units"),)


def toy(first=Lin, name="toy", options=WIDTH, tasks=("classify", "regress"), **kwargs):
    def build(spec, opts):
        return Sequential([first(opts["width"], tanh=True), Lin(spec.output_size)])

    return Architecture(name, "a toy architecture", tasks, build, options, **kwargs)


def test_a_correct_architecture_passes_every_check():
    done = conformance.check_architecture(toy())
    assert done[0] == "registration"
    for kind in ("vector", "sequence", "image"):
        assert f"{kind}/classify: gradients" in done
        assert f"{kind}/regress: shapes" in done
        assert f"{kind}/classify: training" in done


def test_kinds_and_tasks_restrict_the_checks():
    done = conformance.check_architecture(toy(), kinds=["image"], tasks=["regress"],
                                          checks=["shapes", "gradients"])
    assert done == ["registration", "image/regress: shapes", "image/regress: gradients"]
    with pytest.raises(AssertionError, match="asked to check image data, but its data_kinds"):
        conformance.check_architecture(toy(data_kinds=("vector",)), kinds=["image"])


class WrongBiasGrad(Lin):
    def bias_grad(self, g):
        return 0.5 * g.sum(axis=0)


class SeedlessInit(Lin):
    def init(self, rng, shape):
        return np.random.default_rng(0).standard_normal(shape)


class GlobalNoise(Lin):
    """Draws on state the run's seed does not control (here a process-wide counter, which
    unlike a random mask cannot come out the same twice by chance)."""

    calls = itertools.count(1)

    def forward(self, x, training=False):
        out = super().forward(x, training)
        return out * (1.0 + 1e-3 * next(self.calls)) if training else out


class InPlace(Lin):
    def forward(self, x, training=False):
        x[..., 0] = 0.0
        return super().forward(x, training)


class StaleCopy(Lin):
    """Keeps its own reference to the weight array: blind to the trainer's flat buffer."""

    def build(self, input_shape, rng):
        shape = super().build(input_shape, rng)
        self._w = self.weight.value
        return shape

    def forward(self, x, training=False):
        self._shape = x.shape
        self._x = x.reshape(len(x), -1)
        self._z = np.tanh(self._x @ self._w + self.bias.value)
        return self._z


class BatchMixing(Lin):
    def forward(self, x, training=False):
        return super().forward(x - x.mean(axis=0), training)


class AddsIntoGrad(Lin):
    """Adds into its weight's gradient: right on the first backward, wrong ever after."""

    def backward(self, grad_out):
        g = grad_out * (1 - self._z ** 2) if self.tanh else grad_out
        self.weight.grad += self._x.T @ g
        self.bias.grad[...] = g.sum(axis=0)
        return (g @ self.weight.value.T).reshape(self._shape)


class ScalesItsGradient(Lin):
    def backward(self, grad_out):
        grad_out *= 1.0 / (1 + self.tanh)  # wrong: the caller may still need grad_out
        return super().backward(grad_out) * (1 + self.tanh)


class Hidden(Layer):
    """A container that forgets to expose its child's parameters."""

    def __init__(self, units, tanh=False, name=None):
        super().__init__(name)
        self.inner = Lin(units, tanh)

    def build(self, input_shape, rng):
        self.inner.dtype = self.dtype
        self.output_shape = self.inner.build(input_shape, rng)
        self.input_shape, self.built = tuple(input_shape), True
        return self.output_shape

    def forward(self, x, training=False):
        return self.inner.forward(x, training)

    def backward(self, grad_out):
        return self.inner.backward(grad_out)


@pytest.mark.parametrize("layer, check, message", [
    (WrongBiasGrad, "gradients", r"gradient of Sequential parameter 0\.bias \(in "
                                 r"WrongBiasGrad\(units=5, tanh=True\)\) does not match"),
    (SeedlessInit, "determinism", "build identical values of 0.weight"),
    (GlobalNoise, "determinism", "same seed gives different outputs"),
    (InPlace, "shapes", "modified its input in place"),
    (BatchMixing, "shapes", "examples must not mix"),
    (StaleCopy, "training", r"changing parameter 0.weight \(in StaleCopy\(units=5, "
                            r"tanh=True\)\) does not change the outputs"),
    (AddsIntoGrad, "shapes", r"a second forward and backward of the same batch changed the "
                             r"gradient of parameter 0\.weight \(in AddsIntoGrad\(units=5, "
                             r"tanh=True\)\) .*must overwrite Parameter\.grad"),
    (ScalesItsGradient, "shapes", r"backward of ScalesItsGradient\(units=5, tanh=True\) "
                                  "modified the gradient it received in place"),
    (Hidden, "checkpoint", "loaded from a checkpoint gives other outputs"),
])
def test_the_kit_catches(layer, check, message):
    with pytest.raises(AssertionError, match=message):
        conformance.check_architecture(toy(layer), kinds=["vector"], tasks=["classify"],
                                       checks=[check])


def test_check_layer_catches_a_backward_that_adds_into_the_gradient():
    with pytest.raises(AssertionError, match=r"gradient of AddsIntoGrad parameter weight changed "
                                             r"when forward and backward ran again"):
        check_layer(AddsIntoGrad(3, tanh=True), (4,))
    check_layer(Lin(3, tanh=True), (4,))


def test_the_shapes_check_leaves_the_layers_as_they_were():
    model = conformance.check_output_shapes(toy(), conformance.tiny_spec("vector"))
    assert all("backward" not in vars(layer) for layer in conformance.iter_layers(model))
    with pytest.raises(AssertionError):
        conformance.check_output_shapes(toy(ScalesItsGradient), conformance.tiny_spec("vector"))


def test_model_gradient_messages_name_the_layer_not_the_kit():
    try:
        conformance.check_architecture(toy(WrongBiasGrad), kinds=["image"], tasks=["classify"],
                                       checks=["gradients"])
    except AssertionError as exc:
        message = str(exc)
    assert "_Replay" not in message and "Replay" not in message
    assert message.startswith("toy on image data (1, 8, 8) (classify): gradient of Sequential "
                              "parameter 0.bias (in WrongBiasGrad(units=5, tanh=True))")


class ReusedOutput(Lin):
    """Writes every result into one buffer: fine inside a model, wrong for its last layer."""

    def forward(self, x, training=False):
        out = super().forward(x, training)
        if getattr(self, "_out", None) is None or self._out.shape != out.shape:
            self._out = np.empty_like(out)
        self._out[...] = out
        return self._out


def test_an_output_overwritten_by_the_next_call_is_caught():
    arch = Architecture("reuse", "reuses its output buffer", ("classify",),
                        lambda spec, opts: Sequential([Lin(4, tanh=True),
                                                       ReusedOutput(spec.output_size)]))
    with pytest.raises(AssertionError, match="overwrote the array forward returned"):
        conformance.check_architecture(arch, checks=["shapes"])
    inside = Architecture("inside", "reuses a buffer inside", ("classify",),
                          lambda spec, opts: Sequential([ReusedOutput(4, tanh=True),
                                                         Lin(spec.output_size)]))
    conformance.check_architecture(inside, kinds=["vector"], checks=["shapes", "gradients"])


def test_a_model_zoo_cannot_save_is_caught():
    # A bare layer trains, but zoo's checkpoints need the model's state_dict (Sequential has it).
    arch = Architecture("bare", "a single layer", ("classify",),
                        lambda spec, opts: Lin(spec.output_size))
    conformance.check_architecture(arch, kinds=["vector"], checks=["shapes", "gradients"])
    with pytest.raises(AssertionError, match="saving the trained run with zoo.checkpoints"):
        conformance.check_architecture(arch, kinds=["vector"], checks=["training"])


def test_wrong_output_size_is_caught():
    arch = Architecture("bad", "outputs one unit too many", ("classify",),
                        lambda spec, opts: Sequential([Lin(spec.output_size + 1)]))
    with pytest.raises(AssertionError, match=r"output_shape is \(4,\); expected \(3,\)"):
        conformance.check_architecture(arch, checks=["shapes"])


@pytest.mark.parametrize("arch, message", [
    (toy(options=(Option("width", "ints", [5], "hidden units"),)),
     "default \\[5\\] parses to \\(5,\\)"),
    (toy(name="two words"), "name must be a non-empty word"),
    (toy(tasks=("classify", "cluster")), "tasks must be a non-empty subset"),
    (toy(defaults={"learning_rate": 0.1}), "defaults has unknown keys \\['learning_rate'\\]"),
])
def test_registration_problems_are_caught(arch, message):
    with pytest.raises(AssertionError, match=message):
        conformance.check_registration(arch)


def test_an_option_that_does_not_round_trip_is_caught():
    class Odd:
        """A value whose text form does not parse back."""

        def __init__(self, value):
            self.value = value if isinstance(value, int) else len(str(value))

        def __eq__(self, other):
            return isinstance(other, Odd) and other.value == self.value

    arch = toy(options=(Option("width", int, 5, "units"), Option("odd", Odd, Odd(3), "odd")))
    with pytest.raises(AssertionError, match="are not JSON-serialisable"):
        conformance.check_config(arch, conformance.tiny_spec("vector"))


def test_fixtures_from_the_pytest_plugin(zoo_conformance, zoo_host):
    import zoo.testing
    from zoo.plugins import get_host

    assert zoo_conformance is zoo.testing
    assert zoo_host is get_host()
    assert zoo_conformance.check_layer.__module__ == "zoo.kit.gradcheck"
    assert zoo_conformance.check_architecture is conformance.check_architecture
    zoo_conformance.check_layer(Lin(3, tanh=True), (4,))


def test_importing_zoo_testing_stays_light():
    code = ("import sys, zoo.testing; "
            "print(sorted(m for m in ('numpy', 'numba', 'zoo.kit.conformance') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
