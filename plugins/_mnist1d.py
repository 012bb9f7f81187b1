"""The MNIST-1D paper's training protocol, shared by the built-ins' ``preset=mnist1d``.

Greydanus, "Scaling Down Deep Learning", 2020 (arXiv:2011.14439); the repository
https://github.com/greydanus/mnist1d (Apache-2.0) trains every model of its benchmark table with
``notebooks/train.py``'s ``get_model_args()``: Adam, learning rate 1e-2, no weight decay,
batches of 100 taken in the data's stored order (the same order every epoch), 8001 updates,
no early stopping, on the whole 4000-example training split, and reports the last step's test
accuracy. The presets set exactly these training defaults (the user's flags still win) and
initialise dense layers and convolution kernels as PyTorch does (``DENSE_INIT``). What remains
different is documented in docs/mnist1d.md: zoo starts convolution biases at zero and
initialises the GRU its own way.

Not a plugin itself (no entry point). Numerics-free, like every plugin module's top level.
"""

PRESET = "mnist1d"

# PyTorch's default initialisation of nn.Linear (weights and biases) and nn.Conv1d (weights).
DENSE_INIT = {"kernel_initializer": "uniform_fan_in", "bias_initializer": "uniform_fan_in"}
CONV_INIT = "uniform_fan_in"

# train.py's loop runs `for step in range(total_steps + 1)` with total_steps = 8000 and updates
# the weights at every step: 8001 updates, the last one on the first batch again. Its batches
# are slices `x[bix:bix + 100]` with `bix = (step * 100) % 4000`: the training examples in their
# stored order, the same order every epoch (shuffle False).
TRAINING = {"optimizer": "adam", "lr": 1e-2, "batch_size": 100, "steps": 8001,
            "shuffle": False, "early_stopping": False, "validation_split": 0.0}
