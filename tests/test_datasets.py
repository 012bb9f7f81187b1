"""Built-in datasets: MNIST-1D, digits and the synthetic sets, and their registration."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from zoo.data import digits, mnist1d, synthetic
from zoo.data.dataset import Dataset
from zoo.data.load import load_dataset
from zoo.errors import ConfigError
from zoo.plugins import PluginHost

BUILTIN = ["adding", "digits", "mnist1d", "sine", "spirals", "xor"]


@pytest.fixture(scope="module")
def host():
    return PluginHost(load=[])  # only zoo's built-in modules: no architecture plugins needed


# -- registration ----------------------------------------------------------------------------

def test_builtin_datasets_are_registered_with_matching_task_and_kind(host):
    assert set(BUILTIN) <= set(host.datasets.names())
    for name in BUILTIN:
        info = host.datasets.get(name)
        dataset = info.load(7)
        assert isinstance(dataset, Dataset)
        assert (dataset.task, dataset.kind) == (info.task, info.kind), name
        assert info.plugin == "zoo.plugins.builtin.datasets"
        described = dataset.describe()
        for key in ("summary", "source", "licence", "citation", "classes", "input_shape"):
            assert key in described, (name, key)
        json.dumps(described)  # what `zoo dataset NAME --json` prints must serialise


def test_unknown_name_lists_installed_and_mentions_paths(host):
    with pytest.raises(ConfigError) as err:
        load_dataset("foo", host=host)
    message = str(err.value)
    assert message.startswith("unknown dataset 'foo'; installed: adding, digits, mnist1d")
    assert "or give a path to a .npz, .csv or IDX folder" in message


def test_options_are_checked_against_the_loader(host):
    with pytest.raises(ConfigError, match="dataset adding: unknown option 'bogus'; it takes: "
                                          "length, n"):
        load_dataset("adding", host=host, bogus=1)
    with pytest.raises(ConfigError, match="mnist1d: unknown option 'length'"):
        load_dataset("mnist1d", host=host, length=10)
    with pytest.raises(ConfigError, match="length must be an integer >= 2; received length=1"):
        load_dataset("adding", host=host, length=1)


def test_length_shorthand_and_option_agree(host):
    by_name = load_dataset("adding-120", host=host, seed=3)
    by_option = load_dataset("adding", host=host, seed=3, length="120")
    assert by_name.name == by_option.name == "adding-120"
    assert by_name.x_train.shape[1:] == (120, 2)
    np.testing.assert_array_equal(by_name.x_train, by_option.x_train)
    assert load_dataset("sine-12", host=host).x_train.shape[1:] == (12, 1)
    with pytest.raises(ConfigError, match="unknown dataset 'mnist1d-5'"):
        load_dataset("mnist1d-5", host=host)  # mnist1d takes no length


# -- MNIST-1D ---------------------------------------------------------------------------------

def test_mnist1d_templates_follow_the_paper():
    t = mnist1d.templates()
    assert t.shape == (10, 12)
    np.testing.assert_allclose(t[:, 0], 0.0)       # shifted to start at zero
    np.testing.assert_allclose(t[:, -1], 0.0, atol=1e-12)  # and end there (same raw level)
    np.testing.assert_allclose(t.std(axis=1), 1 / 6)  # whitened, then divided by 6
    assert t[0].max() > 0 and t[6].max() <= 1e-12  # "0" bulges up, "6" dips down


def test_mnist1d_shapes_dtypes_and_balance():
    x, y = mnist1d.generate(42)
    assert x.shape == (5000, 40) and y.shape == (5000,)
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)
    assert not np.array_equal(y[:20], np.sort(y[:20]))  # shuffled, not class blocks
    d = mnist1d.load()
    assert (d.x_train.shape, d.x_test.shape) == ((4000, 40), (1000, 40))
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.kind == "vector" and d.task == "classify" and d.classes == [str(i) for i in range(10)]
    assert d.spec.input_shape == (40,) and d.spec.output_size == 10
    # Every class is represented in both splits in roughly its share.
    assert np.bincount(d.y_test, minlength=10).min() > 70


def test_mnist1d_is_standardised_globally():
    d = mnist1d.load()
    full = np.concatenate([d.x_train, d.x_test]).astype(np.float64)
    assert abs(full.mean()) < 1e-5 and abs(full.std() - 1.0) < 1e-5
    # Global, not per feature: the positions keep different spreads.
    assert full.std(axis=0).max() - full.std(axis=0).min() > 0.05


def test_mnist1d_is_deterministic_in_its_seed_and_cached_safely():
    a, b, c = mnist1d.load(42), mnist1d.load(42), mnist1d.load(43)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    a.x_train[:] = 0  # a caller scribbling on its copy leaves the cache intact
    assert np.abs(mnist1d.load(42).x_train).sum() > 0
    fresh, _ = mnist1d.generate(42)
    np.testing.assert_allclose(
        (fresh - fresh.mean()) / fresh.std(), np.concatenate([b.x_train, b.x_test]), atol=1e-6)


REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "mnist1d_reference.json").read_text())


def test_mnist1d_is_the_reference_dataset_to_float32_precision():
    """Seed 42 gives the reference generator's examples in its order (mnist1d 0.0.2.post1)."""
    d = mnist1d.load(42)
    np.testing.assert_array_equal(d.y_train[:100], REFERENCE["y_train_first100"])
    np.testing.assert_array_equal(d.y_test[:100], REFERENCE["y_test_first100"])
    np.testing.assert_array_equal(np.bincount(d.y_train, minlength=10),
                                  REFERENCE["train_label_counts"])
    for split, rows in (("train", REFERENCE["train_rows"]), ("test", REFERENCE["test_rows"])):
        x = d.x_train if split == "train" else d.x_test
        for index, values in rows.items():
            # zoo's float32 is the reference's float64 rounded to float32, bit for bit.
            np.testing.assert_array_equal(x[int(index)], np.asarray(values).astype(np.float32),
                                          err_msg=f"{split} example {index}")
    # Every example counts: the column sums over each split agree to float32 rounding.
    np.testing.assert_allclose(d.x_train.astype(np.float64).sum(axis=0),
                               REFERENCE["train_column_sums"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(d.x_test.astype(np.float64).sum(axis=0),
                               REFERENCE["test_column_sums"], rtol=0, atol=1e-4)


def test_mnist1d_other_seeds_replay_the_reference_with_that_seed():
    d = mnist1d.load(7)
    np.testing.assert_array_equal(d.y_test[:100], REFERENCE["seed7_y_test_first100"])
    for index, values in REFERENCE["seed7_train_rows"].items():
        np.testing.assert_array_equal(d.x_train[int(index)], np.asarray(values).astype(np.float32))


def test_mnist1d_rejects_seeds_the_reference_generator_cannot_take():
    with pytest.raises(ConfigError, match=r"mnist1d: seed must be an integer in \[0, 2\*\*32\)"):
        mnist1d.generate(2**32)
    with pytest.raises(ConfigError, match="seed must be"):
        mnist1d.generate(-1)


def test_mnist1d_gaussian_smoothing_matches_a_naive_reflecting_filter():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 72))
    sigma, radius = 2.0, 8
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()

    def reflect(i, n):  # scipy's 'reflect': d c b a | a b c d | d c b a
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - i - 1
        return i

    naive = np.array([[sum(w[j + radius] * row[reflect(i + j, 72)]
                           for j in range(-radius, radius + 1)) for i in range(72)]
                      for row in x])
    np.testing.assert_allclose(mnist1d._gaussian_smooth(x, sigma), naive, atol=1e-12)


def _softmax_regression_accuracy(x_train, y_train, x_test, y_test, steps=300, lr=0.5):
    """Multinomial logistic regression by full-batch gradient descent (no regularisation)."""
    x_train = np.hstack([x_train, np.ones((len(x_train), 1))]).astype(np.float64)
    x_test = np.hstack([x_test, np.ones((len(x_test), 1))]).astype(np.float64)
    onehot = np.eye(10)[y_train]
    w = np.zeros((x_train.shape[1], 10))
    for _ in range(steps):
        z = x_train @ w
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * x_train.T @ (p - onehot) / len(x_train)
    return float(np.mean((x_test @ w).argmax(axis=1) == y_test))


@pytest.mark.slow
def test_mnist1d_logistic_regression_baseline_is_near_the_published_32_percent():
    d = mnist1d.load(42)
    accuracy = _softmax_regression_accuracy(d.x_train, d.y_train, d.x_test, d.y_test)
    print(f"mnist1d logistic regression test accuracy: {accuracy:.3f} (published: 0.32)")
    assert 0.25 <= accuracy <= 0.40, accuracy


# -- digits -----------------------------------------------------------------------------------

DIGITS_NPZ_SHA256 = "b2dab7b501728c22e9119ad76740b2e17c77a231e42d1e592380d90886f1a05e"
DIGITS_ARRAYS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def test_digits_shipped_file_checksum_and_contents():
    assert hashlib.sha256(digits.PATH.read_bytes()).hexdigest() == DIGITS_NPZ_SHA256
    assert digits.PATH.stat().st_size < 100_000
    images, labels = digits.raw()
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert images.max() == 16 and labels.max() == 9
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert digest == DIGITS_ARRAYS_SHA256
    np.testing.assert_array_equal(np.bincount(labels),
                                  [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_digits_dataset_split_and_scaling():
    d = digits.load()
    assert d.kind == "image" and d.task == "classify"
    assert d.x_train.shape[1:] == (1, 8, 8) and len(d.x_train) + len(d.x_test) == 1797
    assert len(d.x_test) == 359
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    # Stratified: each class gives 20% of its images (rounded down or up) to the test split.
    _, labels = digits.raw()
    share = np.bincount(d.y_test) - np.bincount(labels) * 0.2
    assert share.min() > -1 and share.max() < 1
    # The split is fixed: another seed gives the same arrays.
    other = digits.load(seed=7)
    np.testing.assert_array_equal(d.x_test, other.x_test)
    np.testing.assert_array_equal(d.y_train, other.y_train)


def test_digits_attribution():
    info = digits.load().describe()
    assert info["classes"] == [str(i) for i in range(10)]
    assert "CC BY 4.0" in info["licence"]
    assert "Alpaydin" in info["citation"] and "Kaynak" in info["citation"]
    assert "UCI" in info["source"]
    licence = digits.PATH.with_name("DIGITS_LICENSE.txt").read_text()
    for needle in ("Alpaydin", "Kaynak", "CC BY 4.0", "10.24432/C50P49", "Changes made by zoo"):
        assert needle in licence
    assert "Alpaydin" in digits.__doc__ and "CC BY 4.0" in digits.__doc__


def test_mnist1d_credit():
    info = mnist1d.load().describe()
    assert "Greydanus" in info["citation"] and "2011.14439" in info["citation"]
    assert "Apache-2.0" in info["licence"]
    assert "Greydanus" in mnist1d.__doc__ and "Apache-2.0" in mnist1d.__doc__


# -- synthetic sets ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [synthetic.spirals, synthetic.xor, synthetic.sine,
                                  synthetic.adding])
def test_synthetic_sets_are_deterministic_in_their_seed(make):
    a, b, c = make(5), make(5), make(6)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    assert len(a.x_train) == 4 * len(a.x_test)


@pytest.mark.parametrize("arms", [2, 3])
def test_spirals_are_balanced_interleaved_arms(arms):
    d = synthetic.spirals(arms=arms, n=900, noise=0.0)
    assert d.x_train.shape[1:] == (2,) and d.classes == [str(i) for i in range(arms)]
    y = np.concatenate([d.y_train, d.y_test])
    x = np.concatenate([d.x_train, d.x_test]).astype(np.float64)
    np.testing.assert_array_equal(np.bincount(y), [900 // arms] * arms)
    # Without noise each point sits on its own arm: r = 0.1 + 0.9 t, angle = 3 pi t + 2 pi c/k.
    r = np.hypot(x[:, 0], x[:, 1])
    t = (r - 0.1) / 0.9
    angle = 3 * np.pi * t + 2 * np.pi * y / arms
    np.testing.assert_allclose(np.cos(angle), x[:, 0] / r, atol=1e-5)
    np.testing.assert_allclose(np.sin(angle), x[:, 1] / r, atol=1e-5)
    with pytest.raises(ConfigError, match="arms must be 2 or 3"):
        synthetic.spirals(arms=4)


def test_xor_labels_are_the_sign_disagreement():
    d = synthetic.xor(n=500)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        np.testing.assert_array_equal(y, (x[:, 0] > 0) != (x[:, 1] > 0))
        assert np.abs(x).max() <= 1.0
    assert 0.4 < d.y_train.mean() < 0.6


def test_sine_target_is_the_clean_continuation():
    d = synthetic.sine(noise=0.0, length=30, n=200)
    assert d.x_train.shape == (160, 30, 1) and d.y_train.shape == (160, 1)
    x = d.x_train[:, :, 0].astype(np.float64)
    # A pure sinusoid obeys x[t+1] = 2 cos(w) x[t] - x[t-1]; recover cos(w) per sequence.
    c = ((x[:, 2:] + x[:, :-2]) * x[:, 1:-1]).sum(1) / (2 * (x[:, 1:-1] ** 2).sum(1))
    predicted = 2 * c * x[:, -1] - x[:, -2]
    np.testing.assert_allclose(predicted, d.y_train[:, 0], atol=1e-4)
    noisy = synthetic.sine(noise=0.05, length=30, n=200)
    assert np.abs(noisy.x_train - d.x_train).max() > 0.05  # inputs noisy, targets clean
    np.testing.assert_array_equal(noisy.y_train, d.y_train)


@pytest.mark.parametrize("length", [50, 7, 200])
def test_adding_problem_targets_and_markers(length):
    d = synthetic.adding(length=length, n=300)
    assert d.task == "regress" and d.kind == "sequence"
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.shape[1:] == (length, 2) and y.shape == (len(x), 1)
        values, markers = x[:, :, 0], x[:, :, 1]
        assert values.min() >= 0 and values.max() <= 1
        assert set(np.unique(markers)) <= {0.0, 1.0}
        half = length // 2
        np.testing.assert_array_equal(markers[:, :half].sum(1), 1)  # one in the first half
        np.testing.assert_array_equal(markers[:, half:].sum(1), 1)  # one in the second half
        np.testing.assert_allclose((values * markers).sum(1), y[:, 0], rtol=1e-6)
    assert d.name == ("adding" if length == 50 else f"adding-{length}")
