"""zoo's built-in datasets, registered through the same hook a plugin uses."""

from zoo.data import digits, mnist1d, synthetic
from zoo.data.dataset import DatasetInfo
from zoo.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    register(DatasetInfo("mnist1d", "MNIST-1D: 1-D procedurally generated digits, 40 points, "
                         "10 classes (Greydanus 2020); the default", "classify", "vector",
                         mnist1d.load))
    register(DatasetInfo("digits", "UCI optical handwritten digits: 1797 8x8 images, "
                         "10 classes (CC BY 4.0)", "classify", "image", digits.load))
    register(DatasetInfo("spirals", "interleaved spirals in the plane, 2 arms "
                         "(spirals(arms=3) for 3)", "classify", "vector", synthetic.spirals))
    register(DatasetInfo("xor", "XOR of the signs of two coordinates", "classify", "vector",
                         synthetic.xor))
    register(DatasetInfo("sine", "noisy sine waves of 50 steps (sine(length=T) for T): "
                         "regress the next value", "regress", "sequence", synthetic.sine))
    register(DatasetInfo("adding", "the adding problem, 50 steps (adding(length=T) for T): sum "
                         "two marked values (Hochreiter & Schmidhuber 1997)", "regress", "sequence",
                         synthetic.adding))
