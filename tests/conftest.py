# No global jax_default_matmul_precision here: float32 parity on every backend is the library's own precision policy
# (musicgen_jax/layers.py), and the tests check it as users run it.

import gc
import os
import tempfile

import pytest

# A per-session compilation cache folder (set before any test runs, so CLI subprocesses inherit it): the CLI turns the
# persistent cache on by default, and tests must not write into the user's ~/.cache.
_compilation_cache = tempfile.TemporaryDirectory(prefix="musicgen-jax-test-xla-")
os.environ["MUSICGEN_JAX_CACHE_DIR"] = _compilation_cache.name


def _mapped_regions() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return None


def _max_map_count() -> int | None:
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(limit.read())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs(request):
    """Frees each test module's compiled programs when the module ends.

    Every XLA:CPU executable keeps its code in a few memory mappings (3 for a small program, ~20 for a decoder
    pass), and jax's caches keep every executable alive. One pytest process compiles thousands of distinct programs,
    and past Linux's per-process limit (``vm.max_map_count``, 65530 by default) the next mmap fails inside XLA and
    the process dies with SIGSEGV, in a compile or a persistent-cache write (benchmarks/NOTES.md #24: 62k mappings
    at the crash). Clearing jax's caches between modules keeps the count near one module's. A module that alone
    comes near the limit fails here with the numbers instead of crashing a later one."""
    yield
    import jax

    gc.collect()
    jax.clear_caches()
    gc.collect()
    regions, limit = _mapped_regions(), _max_map_count()
    if regions is not None and limit is not None and regions > 0.6 * limit:
        pytest.fail(
            f"{request.module.__name__}: {regions} memory mappings after clearing jax's caches "
            f"(vm.max_map_count {limit}): "
            "something outside jax's caches holds compiled programs",
            pytrace=False,
        )
