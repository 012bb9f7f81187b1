"""Tests for the resmlp plugin: zoo's conformance kit, then the residual block's own behaviour."""

import numpy as np
import pytest
import zoo_resmlp

from zoo.errors import ConfigError
from zoo.testing import build_model, check_layer, check_plugin, tiny_spec


def test_plugin_loads_and_conforms():
    # The installed entry point loads cleanly and resmlp passes zoo's checks on every kind of
    # data and task it claims: shapes, float64 gradients, seeds, configs, checkpoints, training.
    assert list(check_plugin("resmlp")) == ["resmlp"]


def test_conforms_with_dropout_and_without_blocks(zoo_conformance):
    zoo_conformance.check_architecture(zoo_resmlp.RESMLP, kinds=["vector"],
                                       options={"dropout": 0.25, "width": 8})
    zoo_conformance.check_architecture(zoo_resmlp.RESMLP, kinds=["vector"], tasks=["regress"],
                                       options={"blocks": 0})


def test_residual_block_gradients():
    from zoo.layers.dense import Dense

    check_layer(zoo_resmlp.Residual([Dense(5, activation="tanh"), Dense(5)]), (5,))


def test_residual_adds_its_input_to_the_body():
    from zoo.layers.dense import Dense

    block = zoo_resmlp.Residual([Dense(4, activation="relu"), Dense(4)])
    block.build((4,), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(block.forward(x), x + block.body.forward(x))
    assert [name for name, _ in block.named_parameters("2.")] == [
        "2.body.0.weight", "2.body.0.bias", "2.body.1.weight", "2.body.1.bias"]
    assert block.num_params == 2 * (4 * 4 + 4)


def test_residual_body_must_keep_the_shape():
    from zoo.layers.dense import Dense

    block = zoo_resmlp.Residual([Dense(3)])
    with pytest.raises(ConfigError, match=r"keep the input shape \(4,\); received .*\(3,\)"):
        block.build((4,), np.random.default_rng(0))


def test_blocks_option_sets_the_depth():
    spec = tiny_spec("image")
    shallow = build_model(zoo_resmlp.RESMLP, spec, {"blocks": 1, "width": 16})
    deep = build_model(zoo_resmlp.RESMLP, spec, {"blocks": 3, "width": 16})
    assert deep.num_params - shallow.num_params == 2 * 2 * (16 * 16 + 16)
    with pytest.raises(ConfigError, match="blocks must be a non-negative integer"):
        build_model(zoo_resmlp.RESMLP, spec, {"blocks": -1})
