# No global jax_default_matmul_precision here: float32 parity on every backend is the library's own precision policy
# (musicgen_jax/layers.py), and the tests check it as users run it.

import os
import tempfile

# A per-session compilation cache folder (set before any test runs, so CLI subprocesses inherit it): the CLI turns the
# persistent cache on by default, and tests must not write into the user's ~/.cache.
_compilation_cache = tempfile.TemporaryDirectory(prefix="musicgen-jax-test-xla-")
os.environ["MUSICGEN_JAX_CACHE_DIR"] = _compilation_cache.name
