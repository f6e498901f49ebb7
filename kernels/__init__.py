"""Numba kernels of lightning-align.

Pure functions of numpy arrays. Nothing is compiled at import: each kernel is compiled on its
first call (and cached on disk by numba), so importing this package stays cheap. Every kernel
releases the GIL (`nogil=True`): words are aligned in a thread beside the decoding loop, and
neither should wait for the other's compiled code.
"""

import hashlib
import os
from pathlib import Path


def drop_stale_cache(here: Path = Path(__file__).parent) -> bool:
    """Delete numba's cached kernels under `here/__pycache__` when any kernel source in `here`
    changed since they were cached; -> whether it deleted them.

    numba keys a cached function to its own file's timestamp, not to the kernels it calls in
    other files: after an edit to boundaries.py, onepass.py's cached code would go on running
    the old boundaries (an installed package is rewritten whole, so this bites those who edit
    the kernels: experiments, notebooks). A hash of all the sources is kept beside the cache."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return False  # a cache kept elsewhere is the user's to manage
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py"))))
    digest = digest.hexdigest()[:16]
    cache = here / "__pycache__"
    stamp = cache / "kernel-sources.sha256"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    dropped = False
    for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
        try:
            f.unlink()
            dropped = True
        except OSError:
            pass  # another process took it first, or a read-only install
    try:
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        pass  # read-only: numba caches elsewhere, or not at all
    return dropped


drop_stale_cache()

from .dtw import dtw, dtw_batch  # noqa: E402
from .matrix import alignment_matrix, token_contrast  # noqa: E402
from .median import median_filter  # noqa: E402

__all__ = ["alignment_matrix", "dtw", "dtw_batch", "median_filter", "token_contrast"]
