"""Have glibc give freed memory back to the system, so a burst of large answers does not
stay in the server's RSS for good.

glibc serves a large allocation (a 10 MB event, its JSON, a page of tasks) from its
own mapping and returns it at ``free``, but only above the mmap threshold, and by
default it raises that threshold to the size of each such block freed (up to 32 MB
on 64-bit): after the first large answer, the next ones come from the heap, whose
freed middle it rarely returns. Measured with ``tests/test_memory_load.py`` on the old
code: 1164 MB stayed after the load by default, 953 MB with ``MALLOC_ARENA_MAX=2``,
233 MB with a fixed threshold of 128 KiB. A fixed threshold is what ``mallopt`` sets
(and setting it turns the raising off); a large block costs a ``mmap`` and a
``munmap``, a few microseconds, next to the milliseconds of building it.

Only ``aicli serve`` does this: the heap is the whole process's, and an embedding
application keeps its own choice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's own starting value: blocks above it are mapped, and unmapped when freed.
MMAP_THRESHOLD = 128 * 1024
# The free top of the heap beyond this is given back at once.
TRIM_THRESHOLD = 1024 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's thresholds (see the module docstring); False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    if not done:
        log.warning("could not set the C library's allocation thresholds")
    return done
