"""Word error rate, as the tests and the speed harness measure recognition."""

from __future__ import annotations

import numpy as np


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over normalized words (lower case, punctuation dropped) divided by
    the number of reference words."""
    norm = lambda s: "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in s).split()  # noqa: E731
    ref, hyp = norm(reference), norm(hypothesis)
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return d[-1] / max(1, len(ref))
