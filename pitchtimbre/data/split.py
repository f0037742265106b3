"""The unseen-instrument split: which instruments never reach training.

Chapter: 02_data
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np


def split_instruments(instrument_family: Mapping[str, str], per_family: int, seed: int) -> set[str]:
    """Instruments held out of training: ``per_family`` of each family, chosen by a seeded
    shuffle, but never the last one of a family (each family keeps a training instrument).

    Deterministic: the same instruments, families and seed give the same held-out set,
    whatever order the mapping is in.

    Chapter: 02_data
    """
    by_family: dict[str, list[str]] = defaultdict(list)
    for inst, fam in instrument_family.items():
        by_family[fam].append(inst)
    rng = np.random.default_rng(seed)
    heldout: set[str] = set()
    for fam in sorted(by_family):
        members = sorted(by_family[fam])
        order = rng.permutation(len(members))
        k = min(per_family, len(members) - 1)
        heldout.update(members[i] for i in order[:k])
    return heldout
