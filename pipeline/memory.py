"""Process-wide memory settings for long-running stream processes.

In: nothing (or ``MALLOC_ARENA_MAX`` and oneDNN's cache variables from the environment). Out:
glibc told to use at most :data:`STREAM_MALLOC_ARENAS` malloc arenas, before the threads that
would create more exist; oneDNN's shape caches capped at :data:`STREAM_SHAPE_CACHE` entries,
before the first forward pass. Nothing happens at import.

Why: glibc gives threads that allocate at the same time their own arena (up to 8 per core), and
memory freed in one arena is not reused by another. A stream process runs Kafka IO threads, the
pipeline's stages and torch's intra-op threads. Its peak RSS with the default detector,
interleaved runs on one topic (docs/benchmarks.md): 1,513-1,629 MB with glibc's default arenas,
1,437-1,492 MB with this call, 1,325-1,480 MB under ``MALLOC_ARENA_MAX=2`` set before start
(threads started by numpy and pyarrow at import exist before this call), the same CPU per
record in all. Deployments should set the variable; this call is the fallback for a process
started without it. An operator's own ``MALLOC_ARENA_MAX`` wins (it is left alone).

:func:`limit_shape_caches`: torch runs the backbone's bfloat16 matrix products through oneDNN,
which keeps a compiled kernel per input shape in two caches of 1,024 entries each (its own
primitive cache and ideep's, inside torch). Every batch of windows padded to a new length is a
new shape, and each entry holds about half a megabyte, so a long-running stream grew by hundreds
of MB as they filled: bare scoring with the default detector passed 1,536 MB after about 2,400
records. With both at 64, the median peak over 1,600 records fell from 1,496 to 1,323 MB at the
same CPU per record (1.01x; docs/benchmarks.md, "oneDNN's shape caches"). Both variables are
read once, when the first kernel is built, so ``detectors.registry.build`` calls this before it
builds any detector (the stream, its scoring worker, ``classify``, the gateway, Spark's Python
workers); an operator's own values win.

:func:`settle_gc` is the other half, called once start-up is over: CPython's cyclic collector
walked every object of start-up (about 108,000 with ``noop``, 580,000 with the ``rules``
detectors) in each full collection, holding the GIL, for a stream that makes almost no cyclic
garbage. Measured on the real pipeline (docs/benchmarks.md, "The garbage collector in the stream
process"): 62 us of the ``noop`` stream's ~450 us of CPU per record went to collections.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import gc
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc malloc.h
STREAM_MALLOC_ARENAS = 2
# Entries of each of oneDNN's shape caches in a stream process (limit_shape_caches).
STREAM_SHAPE_CACHE = 64
SHAPE_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
# Allocations (net) between two young-generation collections once start-up is frozen; CPython's
# default is 700. Batches of records and verdicts live through dozens of young collections at 700.
STREAM_GC_THRESHOLD = 10_000


def limit_malloc_arenas(arenas: int = STREAM_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``. True when applied; False when ``MALLOC_ARENA_MAX``
    is set (the operator's choice stands) or on a C library without ``mallopt`` (musl, macOS)."""
    if arenas <= 0 or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; malloc keeps its default arenas", arenas)
        return False
    return True


def limit_shape_caches(entries: int = STREAM_SHAPE_CACHE) -> list[str]:
    """Cap oneDNN's two shape caches at ``entries`` each, where the environment does not set
    them already; returns the variables this set. Only the first forward pass of the process
    reads them: call it before the detectors load."""
    chosen = [name for name in SHAPE_CACHE_VARIABLES if not os.environ.get(name)]
    for name in chosen:
        os.environ[name] = str(entries)
    return chosen


def settle_gc(threshold: int = STREAM_GC_THRESHOLD) -> int:
    """End of start-up: collect once, move every object left to the collector's permanent
    generation (``gc.freeze``: never walked again), and collect the young generation every
    ``threshold`` allocations instead of 700. Returns how many objects were frozen.

    Reference counting still frees frozen objects; only garbage *cycles* among them are never
    collected: if the watchdog replaces the first Kafka consumer (a stuck rejoin,
    pipeline/source.py), that one consumer's objects stay in memory. Objects made after the call
    are collected as before, and a second call only freezes what was made since the first."""
    gc.collect()
    gc.freeze()
    # Unfrozen at exit: frozen objects are never collected at interpreter shutdown, and nanobind
    # (triton's bindings, loaded with torch) then printed ~30 "nanobind: leaked ..." lines after
    # every stream's summary, which read like a crash (make demo, 2026-12-04).
    atexit.unregister(gc.unfreeze)  # once, however many times start-up settles
    atexit.register(gc.unfreeze)
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
    return gc.get_freeze_count()


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB: VmHWM, the high-water mark of its address space.

    Not ``ru_maxrss``: Linux carries it over from the parent through fork/vfork and exec, so a
    child reports its parent's peak when that was higher (the stream benchmark's child showed
    the parent's 1,052 MB for a ``noop`` stream). 0.0 where /proc is not there.
    """
    return _status_mb("VmHWM:")


def rss_mb() -> float:
    """This process's RSS now, in MB (VmRSS); 0.0 where /proc is not there."""
    return _status_mb("VmRSS:")


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
