"""Hostile command lines and file systems: one ``zoo: error:`` line and exit 2, decided early.

Deep ``--stop`` nesting, control characters and 5000-character paths, permission and
name-length errors on user paths, absurd run ids, foreign run stores; unwritable ``--save``
targets found before training, temp names within the file-system limit, and stale temp files
of killed saves removed by the next save.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from zoo import atomic
from zoo.cli.main import cli
from zoo.errors import ConfigError, printable
from zoo.runstore import RunStore
from zoo.training.stopspec import MAX_DEPTH, parse_stop

XOR = ["train", "--arch", "mlp", "--dataset", "xor", "-o", "hidden=4", "--epochs", "1"]


def zoo(*args):
    return CliRunner().invoke(cli, list(args))


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def nested(depth: int) -> str:
    return "all_of(" * depth + "max_epochs=1" + ")" * depth


# -- --stop nesting ------------------------------------------------------------------------------
def test_deep_stop_nesting_is_refused_not_a_recursion_error():
    with pytest.raises(ConfigError, match=f"criteria nest more than {MAX_DEPTH} levels deep"):
        parse_stop(nested(3000), {"max_epochs": object})
    line = one_error_line(zoo(*XOR, "--stop", nested(3000)))
    assert f"nest more than {MAX_DEPTH} levels" in line and len(line) < 300


def test_nesting_up_to_the_limit_still_parses():
    criterion = parse_stop(nested(MAX_DEPTH))
    assert repr(criterion).count("all_of(") == MAX_DEPTH
    assert repr(parse_stop(repr(criterion))) == repr(criterion)  # repr parses back
    with pytest.raises(ConfigError, match="nest more than"):
        parse_stop(nested(MAX_DEPTH + 1))


# -- paths ----------------------------------------------------------------------------------------
def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path):
    bad = str(tmp_path / "bad\nname.csv")
    line = one_error_line(zoo(*XOR[:3], "--dataset", bad))
    assert printable(bad) in line and "bad\\nname.csv" in line
    line = one_error_line(zoo(*XOR, "--save", str(tmp_path / "no\rsuch" / "m\x1b[2J.ckpt")))
    assert "no\\rsuch" in line and "m\\x1b[2J.ckpt" in line


def test_printable_escapes_every_control_character():
    assert printable("a\nb\tc\x00d\x7fe\x85f\u2028g") == "a\\nb\\tc\\x00d\\x7fe\\x85f\\u2028g"
    assert printable("ünïcödé ok") == "ünïcödé ok"


def test_a_5000_character_path_is_one_line(tmp_path):
    long = "/" + "a" * 5000 + ".csv"
    line = one_error_line(zoo(*XOR[:3], "--dataset", long))
    assert "File name too long" in line
    result = zoo(*XOR, "--save", "/" + "a" * 5000 + ".ckpt")
    line = one_error_line(result)
    assert "cannot write the checkpoint" in line and "File name too long" in line
    assert "training mlp" not in result.output  # refused before any work


def test_os_errors_on_user_paths_are_one_line_exit_2(monkeypatch, tmp_path):
    # Root reads mode-000 files, so the error is raised where the data loader opens the path.
    path = str(tmp_path / "secret.csv")

    def denied(name, **kwargs):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr("zoo.data.load.load_dataset", denied)
    line = one_error_line(zoo(*XOR[:3], "--dataset", path))
    assert line == f"zoo: error: {path}: Permission denied"


# -- --save probed before training ---------------------------------------------------------------
def test_an_unwritable_save_folder_is_found_before_training(monkeypatch, tmp_path):
    def refuse(folder, base):
        raise PermissionError(13, "Permission denied", os.path.join(folder, base))

    monkeypatch.setattr(atomic, "_create_temp", refuse)
    target = tmp_path / "m.ckpt"
    result = zoo(*XOR, "--save", str(target))
    line = one_error_line(result)
    assert line == (f"zoo: error: cannot write the checkpoint to {target}: Permission denied "
                    f"(the folder {tmp_path} is not writable)")
    assert "training mlp" not in result.output


def test_an_unwritable_compare_out_is_found_before_any_job(monkeypatch, tmp_path):
    def refuse(folder, base):
        raise OSError(30, "Read-only file system", os.path.join(folder, base))

    monkeypatch.setattr(atomic, "_create_temp", refuse)
    result = zoo("compare", "--arch", "mlp", "--dataset", "xor", "--epochs", "1", "--seeds", "1",
                 "--jobs", "1", "--no-store", "--out", str(tmp_path / "cmp"))
    line = one_error_line(result)
    assert line == (f"zoo: error: cannot write the comparison results to "
                    f"{tmp_path / 'cmp' / 'results.json'}: Read-only file system (the folder "
                    f"{tmp_path / 'cmp'} is not writable)")
    assert "comparing" not in result.output


def test_a_legal_250_character_target_name_saves(tmp_path):
    target = tmp_path / ("m" * 245 + ".ckpt")
    assert len(target.name) == 250
    result = zoo(*XOR, "--save", str(target), "--no-store")
    assert result.exit_code == 0, result.output
    assert target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temp left


def test_the_best_checkpoints_longer_name_is_probed_too(tmp_path):
    target = tmp_path / ("m" * 247 + ".ckpt")  # legal; its .best.ckpt twin is 257 bytes
    result = zoo(*XOR, "--save", str(target), "--checkpoint-every", "1", "--no-store")
    line = one_error_line(result)
    assert line == (f"zoo: error: cannot write the best checkpoint to "
                    f"{tmp_path / ('m' * 247 + '.best.ckpt')}: File name too long")
    assert "training mlp" not in result.output and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["m" * 255, "é" * 127, "x" * 200 + "\n" + "é" * 20, "a.ckpt"])
def test_temp_names_fit_the_name_limit(tmp_path, name):
    temp = atomic.temp_name(str(tmp_path), name)
    assert len(os.fsencode(temp)) <= 255
    fd = os.open(tmp_path / temp, os.O_CREAT | os.O_WRONLY)  # a real, legal file name
    os.close(fd)
    entry = next(e for e in os.scandir(tmp_path) if e.name == temp)
    match = atomic._TEMP.match(entry.name)
    assert match and int(match["pid"]) == os.getpid()


# -- stale temps ----------------------------------------------------------------------------------
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_save_removes_only_temps_whose_writer_is_gone(tmp_path, monkeypatch):
    base = "run.ckpt"
    host, target = atomic._host_tag(), atomic._digest(base, 8)
    def temp(pid, base_tag=target, host_tag=host, stem=base):
        path = tmp_path / f".{stem}.{base_tag}.{host_tag}.{pid}.0123abcd.tmp"
        path.write_bytes(b"partial")
        return path

    dead, alive = temp(dead_pid()), temp(os.getppid())
    other_host = temp(dead_pid(), host_tag="abcdef" if host != "abcdef" else "fedcba")
    other_target = temp(dead_pid(), base_tag=atomic._digest("other.ckpt", 8), stem="other.ckpt")
    old_scheme = tmp_path / f".{base}.0123456789ab.tmp"
    old_scheme.write_bytes(b"partial")
    old_and_old = tmp_path / f".{base}.ba9876543210.tmp"
    old_and_old.write_bytes(b"partial")
    stale = time.time() - atomic.STALE_AGE - 60
    os.utime(old_and_old, (stale, stale))
    unrelated = tmp_path / ".run.ckpt.notes.tmp"
    unrelated.write_bytes(b"mine")

    with atomic.atomic_open(tmp_path / base) as f:
        f.write(b"done")
    left = {p.name for p in tmp_path.iterdir()}
    assert not dead.exists() and not old_and_old.exists()
    assert {alive.name, other_host.name, other_target.name, old_scheme.name, unrelated.name,
            base} == left
    # Another machine's temp (a shared folder) goes only when it is old enough.
    os.utime(other_host, (stale, stale))
    assert atomic.remove_stale_temps(str(tmp_path), base) == [str(other_host)]


KILLED_SAVE = """
import os, signal, sys
from zoo.atomic import atomic_open
with atomic_open(sys.argv[1]) as f:
    f.write(b"x" * 100000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_save_killed_with_sigkill_leaves_a_temp_the_next_save_removes(tmp_path):
    target = tmp_path / "model.ckpt"
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(target)], timeout=120,
                          check=False)
    assert done.returncode == -9
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and not target.exists()
    with atomic.atomic_open(target) as f:
        f.write(b"complete")
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]
    assert target.read_bytes() == b"complete"


# -- the run store --------------------------------------------------------------------------------
def test_an_absurd_run_id_is_one_line(tmp_path):
    store = tmp_path / "runs.db"
    RunStore(store).close()
    for run_id in ("100000000000000000000", "9223372036854775808", "0"):
        line = one_error_line(zoo("runs", "show", run_id, "--store", str(store)))
        assert line.startswith(f"zoo: error: no run {run_id} in {store}"), line


def test_a_foreign_sqlite_file_is_never_written_into(tmp_path):
    foreign = tmp_path / "notes.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text)")
        conn.execute("CREATE TABLE runs (id, what)")  # a table named like zoo's, not zoo's
    before = foreign.read_bytes()
    with pytest.raises(ConfigError, match=r"is an SQLite database of another program \(tables: "
                                          r"notes, runs\), not a zoo run store"):
        RunStore(foreign)
    for args in (["runs", "list"], ["runs", "show", "1"], XOR):
        result = zoo(*args, "--store", str(foreign))
        assert "another program" in one_error_line(result)
        assert "training" not in result.output  # refused before training, not after
    assert foreign.read_bytes() == before
    not_sqlite = tmp_path / "text.db"
    not_sqlite.write_text("just text\n" * 100)
    assert "file is not a database" in one_error_line(zoo("runs", "list", "--store",
                                                          str(not_sqlite)))


# -- predict: inputs that are not what they claim, outputs that overflow -------------------------
@pytest.fixture(scope="module")
def xor_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "xor.ckpt"
    result = zoo(*XOR, "--save", str(path), "--no-store")
    assert result.exit_code == 0, result.output
    return path


# Each of these rows overflows float32 inside the first dense layer (3e38 + 3e38 = inf).
OVERFLOW = [[3e38, 3e38], [0.1, 0.2], [-3e38, 3e38], [0.3, -0.4]]


def test_predictions_that_overflow_are_an_error_naming_the_rows(xor_checkpoint, tmp_path):
    import numpy as np

    inputs = tmp_path / "x.npy"
    np.save(inputs, np.array(OVERFLOW, np.float32))
    result = zoo("predict", str(xor_checkpoint), str(inputs))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "zoo: error: predictions are not finite (NaN or Inf) for 2 of 4 examples, rows 0, 2: "
        "the model overflowed on them; --allow-nonfinite writes them flagged"]
    out = tmp_path / "p.npz"
    result = zoo("predict", str(xor_checkpoint), str(inputs), "--allow-nonfinite",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "zoo: warning: 2 of 4 predictions are not finite, rows 0, 2 (flagged: finite false, "
        "label -1)"]
    with np.load(out) as saved:
        assert saved["finite"].tolist() == [False, True, False, True]
        assert saved["labels"][[0, 2]].tolist() == [-1, -1]
        assert saved["labels"][[1, 3]].min() >= 0
        assert np.isfinite(saved["probabilities"][[1, 3]]).all()
    result = zoo("predict", str(xor_checkpoint), str(inputs), "--allow-nonfinite", "--json")
    report = json.loads(result.stdout)
    assert report["finite"] == [False, True, False, True] and report["labels"][0] == -1
    assert report["probabilities"][0] == [None, None]
    table = zoo("predict", str(xor_checkpoint), str(inputs), "--allow-nonfinite").stdout
    assert table.splitlines()[2].split()[:2] == ["0", "-"] and "not finite" in table


def test_inputs_beyond_the_models_float_range_are_refused(xor_checkpoint, tmp_path):
    import numpy as np

    inputs = tmp_path / "x64.npy"
    np.save(inputs, np.array([[0.5, 0.5], [1e300, 1.0]]))
    line = one_error_line(zoo("predict", str(xor_checkpoint), str(inputs)))
    assert line == (f"zoo: error: input {inputs}: 1 value is beyond the range of the model's "
                    "float32 (|x| <= 3.403e+38), in row 1")


def npy_claiming(path, shape):
    """A valid .npy header claiming ``shape`` float64, followed by 16 bytes of data."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    path.write_bytes(buffer.getvalue() + bytes(16))


@pytest.mark.parametrize("make, diagnosis", [
    (lambda p, ck: p.write_bytes(ck.read_bytes()),
     "is a safetensors file (a zoo checkpoint?); give the checkpoint first and a .npy file of "
     "inputs second"),
    (lambda p, ck: p.write_bytes(__import__("pickle").dumps({"x": [1.0, 2.0]})),
     "holds pickled Python objects, which zoo never loads; expected a .npy array"),
    (lambda p, ck: __import__("numpy").savez(p.with_suffix(".npz"), x=[1.0]) or
     p.with_suffix(".npz").rename(p), "is an .npz archive"),
    (lambda p, ck: p.write_text("0.1,0.2\n"), "not a .npy file (no NUMPY header)"),
    (lambda p, ck: npy_claiming(p, (2 ** 36, 1024)),
     "its header claims 562,949,953,421,312 bytes of data (float64 array of shape "
     "(68719476736, 1024)); the file holds 16"),
    (lambda p, ck: os.mkfifo(p), "not a regular file (a pipe, device or socket)"),
])
def test_predict_inputs_get_the_right_diagnosis(xor_checkpoint, tmp_path, make, diagnosis):
    inputs = tmp_path / "in.npy"
    make(inputs, xor_checkpoint)
    line = one_error_line(zoo("predict", str(xor_checkpoint), str(inputs)))
    assert line.startswith(f"zoo: error: input {inputs}: ") and diagnosis in line, line


def test_no_numpy_warning_reaches_the_terminal(xor_checkpoint, tmp_path):
    import numpy as np

    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_DEBUG", "PYTHONWARNINGS")}
    diverging = subprocess.run(
        [sys.executable, "-m", "zoo", *XOR, "--epochs", "3", "--optimizer", "sgd",
         "--lr", "1e30", "--no-store"], capture_output=True, text=True, env=env, timeout=300,
        check=False)
    assert diverging.returncode == 0, diverging.stderr
    assert "stopped: non_finite" in diverging.stdout
    assert "Warning" not in diverging.stderr and "encountered" not in diverging.stderr
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.array(OVERFLOW, np.float32))
    overflow = subprocess.run(
        [sys.executable, "-m", "zoo", "predict", str(xor_checkpoint), str(inputs),
         "--allow-nonfinite"], capture_output=True, text=True, env=env, timeout=300,
        check=False)
    assert overflow.returncode == 0
    assert overflow.stderr.splitlines() == [
        "zoo: warning: 2 of 4 predictions are not finite, rows 0, 2 (flagged: finite false, "
        "label -1)"]


# -- models and batches sized before allocation -------------------------------------------------
def test_an_absurd_model_is_refused_before_it_is_allocated():
    import tracemalloc

    tracemalloc.start()
    try:
        result = zoo(*XOR[:5], "-o", "hidden=1000000000000,1000000000000", "--no-store")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = one_error_line(result)
    assert line == ("zoo: error: architecture mlp on xor is too large: an array of shape "
                    "(2, 1000000000000) takes it to 2,000,000,000,000 parameters (8.0 TB as "
                    "float32); the limit is 100,000,000 (set ZOO_MAX_PARAMS to raise the limit)")
    assert peak < 50e6  # nothing near the model's size was allocated


def test_the_parameter_limit_is_overridable(monkeypatch):
    monkeypatch.setenv("ZOO_MAX_PARAMS", "1_000")
    line = one_error_line(zoo("train", "--arch", "cnn", "--dataset", "digits", "--no-store"))
    assert "the limit is 1,000 (set ZOO_MAX_PARAMS to raise the limit)" in line
    monkeypatch.setenv("ZOO_MAX_PARAMS", "a lot")
    assert "ZOO_MAX_PARAMS must be a non-negative integer" in one_error_line(zoo(*XOR))
    monkeypatch.setenv("ZOO_MAX_PARAMS", "0")  # no limit
    assert zoo(*XOR, "--no-store").exit_code == 0


def test_the_budget_counts_parameters_and_buffers():
    import numpy as np

    from zoo.layers.dense import Dense
    from zoo.layers.norm import BatchNorm
    from zoo.model import Sequential
    from zoo.sizing import parameter_budget

    model = Sequential([Dense(8), BatchNorm(), Dense(2)])
    with parameter_budget("m", limit=10 * 8 + 8 + 4 * 8 + 8 * 2 + 2) as budget:
        model.build((10,), np.random.default_rng(0))
    assert budget.used == model.num_params + 2 * 8  # + running mean and variance
    with pytest.raises(ConfigError, match="m is too large: an array of shape \\(8, 2\\)"):
        with parameter_budget("m", limit=10 * 8 + 8 + 4 * 8):
            Sequential([Dense(8), BatchNorm(), Dense(2)]).build((10,), np.random.default_rng(0))


def test_a_batch_larger_than_the_data_is_clamped_and_said():
    result = zoo(*XOR, "--batch-size", "1000000000000", "--no-store", "--json")
    assert result.exit_code == 0, result.output
    note = "batch size 1,000,000,000,000 clamped to 720: the training split has 720 examples"
    assert note in result.stderr.splitlines()  # the header (stderr with --json)
    out = json.loads(result.stdout)
    assert out["batch_size"] == 720 and note in out["notes"]


# -- checkpoints whose (re-signed) metadata describes something absurd ---------------------------
def resigned(source, target, edit):
    """A copy of checkpoint ``source`` whose metadata ``edit`` changed, with a valid hash."""
    from zoo.checkpoints.format import read_checkpoint, write_checkpoint

    tensors, metadata = read_checkpoint(source)
    edit(metadata)
    write_checkpoint(target, tensors, metadata)
    return target


def set_in(*keys_and_value):
    *keys, value = keys_and_value

    def edit(metadata):
        node = metadata
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def widen(metadata):
    metadata["architecture"]["options"]["hidden"] = [40000, 40000]
    metadata["config"]["options"]["hidden"] = "40000,40000"


@pytest.mark.parametrize("edit, message", [
    (widen, "the model its metadata describes is too large: an array of shape (2, 40000)"),
    (set_in("data", "spec", "input_shape", [1e9]),
     "metadata 'data.spec.input_shape' must be a list of positive integers; received "
     "[1000000000.0]"),
    (set_in("data", "spec", "input_shape", [float("inf")]),
     "metadata 'data.spec.input_shape' must be a list of positive integers; received [inf]"),
    (set_in("data", "spec", "input_shape", [10 ** 9]),
     "the model its metadata describes is too large: an array of shape (1000000000, 4)"),
])
def test_a_checkpoint_describing_a_huge_model_is_refused_before_building(
        xor_checkpoint, tmp_path, monkeypatch, edit, message):
    import tracemalloc

    import numpy as np

    monkeypatch.setenv("ZOO_MAX_PARAMS", "0")  # the stored tensors bound it all the same
    hostile = resigned(xor_checkpoint, tmp_path / "hostile.ckpt", edit)
    assert hostile.stat().st_size < 20_000
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.zeros((1, 2), np.float32))
    tracemalloc.start()
    try:
        commands = [("predict", str(hostile), str(inputs)), ("evaluate", str(hostile))]
        if edit is widen:
            commands.append(("train", "--resume", str(hostile), "--epochs", "3", "--no-store"))
        for args in commands:
            line = one_error_line(zoo(*args))
            assert f"checkpoint {hostile}" in line and message in line, (args, line)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6


def test_a_checkpoint_with_a_deeply_nested_stop_spec_is_one_line(xor_checkpoint, tmp_path):
    hostile = resigned(xor_checkpoint, tmp_path / "deep.ckpt",
                       set_in("config", "stop", [nested(3000)]))
    line = one_error_line(zoo("train", "--resume", str(hostile), "--no-store"))
    assert f"nest more than {MAX_DEPTH} levels" in line


# -- options accepted silently before -------------------------------------------------------------
def float_options():
    from zoo.plugins import get_host

    host = get_host()
    return [(arch.name, opt) for name, arch in host.architectures.items()
            for opt in arch.options if opt.type is float]


def test_every_float_option_refuses_nan_and_inf():
    assert float_options(), "the built-in architectures have float options"
    for _arch, opt in float_options():
        for text in ("nan", "NaN", "inf", "-inf", "1e999"):
            with pytest.raises(ConfigError, match=f"{opt.name}"):
                opt.parse(text)


@pytest.mark.parametrize("value", ["-1", "nan", "1"])
def test_dropout_out_of_range_is_refused_not_ignored(value):
    line = one_error_line(zoo(*XOR, "-o", f"dropout={value}", "--no-store"))
    assert "option dropout must be in [0, 1)" in line


def test_a_reader_that_goes_away_ends_zoo_quietly():
    # `zoo list | head -1`: the reader is gone; no traceback, no "Broken pipe" error line.
    # The read end is closed before zoo starts, so its first write fails, whatever the timing.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo", "list"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr == b""
