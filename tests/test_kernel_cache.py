"""numba's cache directory: one per version of the kernel sources (``zoo.kernels._jit``)."""

import os
import shutil

from zoo.kernels import _jit


def test_the_cache_directory_is_named_after_the_kernel_sources():
    assert os.path.basename(_jit.CACHE_DIR) == f"kernels-{_jit.sources_digest()}"
    assert os.path.isdir(_jit.CACHE_DIR)


def test_any_kernel_file_changing_changes_the_digest(tmp_path):
    here = os.path.dirname(_jit.__file__)
    for name in ("dense.py", "dense_stack.py", "notes.txt"):
        shutil.copy(os.path.join(here, name if name.endswith(".py") else "dense.py"),
                    tmp_path / name)
    before = _jit.sources_digest(str(tmp_path))
    assert _jit.sources_digest(str(tmp_path)) == before  # the same sources, the same cache
    (tmp_path / "notes.txt").write_text("not a kernel")
    assert _jit.sources_digest(str(tmp_path)) == before  # only .py files count
    with open(tmp_path / "dense.py", "a") as source:  # a callee changes, its caller does not
        source.write("\n# changed\n")
    assert _jit.sources_digest(str(tmp_path)) != before
