"""BERT's masking rule: which positions of a token window the masked objective hides.

Each position is chosen with probability p; of the chosen, 80% become [MASK], 10% a random
ordinary token and 10% stay as they are. The targets are the original ids at chosen positions
and ``IGNORE_INDEX`` elsewhere, so the cross-entropy counts the chosen positions only:

    L = - 1/|C| sum_{i in C} log p(ids_i | corrupted window),   C = chosen positions.
"""

from __future__ import annotations

import numpy as np

#: Target value of a position that does not count in the loss (``cross_entropy(ignore_index=...)``).
IGNORE_INDEX = -100


def mask_tokens(
    ids: np.ndarray, rng: np.random.Generator, mask_id: int, vocab_size: int, p: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's corruption of ``ids`` (any shape): returns (inputs, targets), both int64.

    Each position is chosen with probability ``p``. targets = ids at chosen positions and
    ``IGNORE_INDEX`` (-100) elsewhere. inputs = ids, except at chosen positions: with
    probability 0.8 ``mask_id``, 0.1 a token drawn uniformly from [0, vocab_size), 0.1
    unchanged. Pass the number of ordinary tokens as ``vocab_size`` so the random replacement
    is never a special token.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"mask_tokens: p must be in [0, 1], got {p}")
    ids = np.asarray(ids, dtype=np.int64)
    chosen = rng.random(ids.shape) < p
    u = rng.random(ids.shape)
    to_mask = chosen & (u < 0.8)
    to_random = chosen & (u >= 0.8) & (u < 0.9)
    inputs = np.where(to_mask, mask_id, ids)
    inputs = np.where(to_random, rng.integers(0, vocab_size, size=ids.shape), inputs)
    targets = np.where(chosen, ids, IGNORE_INDEX)
    return inputs, targets
