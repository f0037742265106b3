"""The weakly supervised pair sampler: (X1, X2, same pitch?, same instrument?).

Each batch holds the four kinds of pairs in fixed counts set by
:attr:`~pitchtimbre.config.PairConfig.proportions`. Sampling is exact (no rejection loops
for the first three kinds), vectorised and runs on any device, so training needs no
per-item Python.

Chapter: 02_data
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import PairConfig
from ..errors import ConfigError

KINDS = (
    "same pitch, same instrument",
    "same pitch, other instrument",
    "other pitch, same instrument",
    "other pitch, other instrument",
)


@dataclass
class PairBatch:
    """Indices of the two notes of each pair and the two flags the model may see.

    Chapter: 02_data
    """

    first: torch.Tensor
    second: torch.Tensor
    same_pitch: torch.Tensor
    same_timbre: torch.Tensor
    kind: torch.Tensor


def kind_counts(batch_size: int, proportions: tuple[float, ...]) -> list[int]:
    """Pairs of each kind in a batch: proportional, rounded by largest remainder.

    Chapter: 02_data
    """
    total = sum(proportions)
    exact = [batch_size * p / total for p in proportions]
    counts = [int(e) for e in exact]
    order = sorted(range(4), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: batch_size - sum(counts)]:
        counts[i] += 1
    return counts


class _Groups:
    """Members of each group of a sorted key, in CSR form."""

    def __init__(self, key: torch.Tensor, tiebreak: torch.Tensor) -> None:
        n = len(key)
        # sort by key, then tiebreak: members of a group are contiguous and sub-sorted
        span = int(tiebreak.max()) + 1 if n else 1
        self.order = torch.argsort(key * span + tiebreak, stable=True)
        _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        self.start = starts[inverse]  # per note: where its group begins in ``order``
        self.count = counts[inverse]  # per note: its group size


class PairSampler:
    """Samples pair batches from notes labelled by ``pitch`` and ``instrument`` (only the
    equality of labels is ever returned).

    Chapter: 02_data
    """

    def __init__(
        self,
        pitch: torch.Tensor,
        instrument: torch.Tensor,
        cfg: PairConfig,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        pitch = pitch.to(self.device).long()
        instrument = instrument.to(self.device).long()
        self.pitch, self.instrument = pitch, instrument
        self.n = len(pitch)
        _, pitch_id = torch.unique(pitch, return_inverse=True)
        _, inst_id = torch.unique(instrument, return_inverse=True)
        n_pitch = int(pitch_id.max()) + 1 if self.n else 1
        note_key = inst_id * n_pitch + pitch_id
        self.by_note = _Groups(note_key, torch.zeros_like(note_key))
        self.by_pitch = _Groups(pitch_id, inst_id)  # members sorted by instrument
        self.by_inst = _Groups(inst_id, pitch_id)  # members sorted by pitch
        # where each note's (instrument, pitch) block sits inside its pitch / instrument group
        self.block_in_pitch = self._block_offset(self.by_pitch, note_key)
        self.block_in_inst = self._block_offset(self.by_inst, note_key)
        self.rank_in_note = self._rank(self.by_note)
        block = self.by_note.count
        others_diff_both = self.n - self.by_pitch.count - self.by_inst.count + block
        self.eligible = [
            torch.nonzero(block >= 2).flatten(),
            torch.nonzero(self.by_pitch.count > block).flatten(),
            torch.nonzero(self.by_inst.count > block).flatten(),
            torch.nonzero(others_diff_both > 0).flatten(),
        ]
        self.counts = kind_counts(cfg.batch_size, cfg.proportions)
        for k, (c, e) in enumerate(zip(self.counts, self.eligible, strict=True)):
            if c > 0 and len(e) == 0:
                raise ConfigError(
                    f"pairs.proportions: the data has no '{KINDS[k]}' pairs "
                    f"(needs {'two velocities of a note' if k == 0 else 'more instruments or pitches'}); "
                    "set that proportion to 0 or use more data"
                )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self._drawn: PairBatch | None = None  # the current draw of ``cfg.draw_batches`` batches
        self._next = 0  # its next row to hand out
        self._draw_start = self.generator.get_state()  # the generator before that draw

    @staticmethod
    def _rank(groups: _Groups) -> torch.Tensor:
        rank = torch.empty_like(groups.order)
        pos = torch.arange(len(groups.order), device=groups.order.device)
        rank[groups.order] = pos
        return rank - groups.start

    def _block_offset(self, groups: _Groups, note_key: torch.Tensor) -> torch.Tensor:
        # offset of the first member of the note's (instrument, pitch) block within its group
        rank = self._rank(groups)
        first = torch.full(
            (int(note_key.max()) + 1,), len(note_key), device=self.device, dtype=torch.long
        )
        first.scatter_reduce_(0, note_key, rank, reduce="amin")
        return first[note_key]

    def _randint(self, high: torch.Tensor) -> torch.Tensor:
        u = torch.rand(high.shape, generator=self.generator, device=self.device)
        return torch.minimum((u * high).long(), high - 1)

    def _anchors(self, kind: int, count: int) -> torch.Tensor:
        pool = self.eligible[kind]
        return pool[self._randint(torch.full((count,), len(pool), device=self.device))]

    def _partners(self, kind: int, a: torch.Tensor) -> torch.Tensor:
        block = self.by_note.count[a]
        if kind == 0:  # another member of the same (instrument, pitch) block
            pos = self._randint(block - 1)
            pos = pos + (pos >= self.rank_in_note[a]).long()
            return self.by_note.order[self.by_note.start[a] + pos]
        if kind in (1, 2):  # same pitch (resp. instrument), skipping the anchor's block
            groups, offset = (
                (self.by_pitch, self.block_in_pitch)
                if kind == 1
                else (self.by_inst, self.block_in_inst)
            )
            pos = self._randint(groups.count[a] - block)
            pos = pos + block * (pos >= offset[a]).long()
            return groups.order[groups.start[a] + pos]
        # kind 3: rejection; a round re-draws only the partners sharing the anchor's pitch or
        # instrument (a few percent), and each round's check is one device synchronisation
        partner = self._randint(torch.full_like(a, self.n))
        for _ in range(1000):
            bad = (self.pitch[partner] == self.pitch[a]) | (
                self.instrument[partner] == self.instrument[a]
            )
            if not bool(bad.any()):
                return partner
            partner = torch.where(bad, self._randint(torch.full_like(a, self.n)), partner)
        raise RuntimeError("pair sampler: could not find pairs differing in pitch and instrument")

    def sample(self) -> PairBatch:
        """One batch of ``cfg.batch_size`` pairs.

        Batches are drawn ``cfg.draw_batches`` at a time, in one pass over the four kinds;
        each call hands out the next row of that draw (a view, so it costs no work).

        Chapter: 02_data
        """
        if self._drawn is None or self._next == self.cfg.draw_batches:
            self._new_draw()
        d, i = self._drawn, self._next
        self._next += 1
        return PairBatch(d.first[i], d.second[i], d.same_pitch[i], d.same_timbre[i], d.kind[i])

    def _new_draw(self) -> None:
        self._draw_start = self.generator.get_state()
        self._drawn = self._draw(self.cfg.draw_batches)
        self._next = 0

    def _draw(self, batches: int) -> PairBatch:
        # every tensor is [batches, batch_size]; a row holds each kind's count in kind order
        firsts, seconds, kinds = [], [], []
        for kind, count in enumerate(self.counts):
            if count == 0:
                continue
            a = self._anchors(kind, count * batches)
            firsts.append(a.view(batches, count))
            seconds.append(self._partners(kind, a).view(batches, count))
            kinds.append(torch.full((batches, count), kind, device=self.device, dtype=torch.long))
        first, second = torch.cat(firsts, dim=1), torch.cat(seconds, dim=1)
        return PairBatch(
            first=first,
            second=second,
            same_pitch=self.pitch[first] == self.pitch[second],
            same_timbre=self.instrument[first] == self.instrument[second],
            kind=torch.cat(kinds, dim=1),
        )

    def state_dict(self) -> dict:
        """Where the sampler stands: the generator's state before the current draw and how
        many of that draw's batches were handed out (``position``), so that a sampler loading
        it hands out the same batches next.

        Chapter: 02_data
        """
        if self._drawn is not None and self._next < self.cfg.draw_batches:
            return {"generator": self._draw_start.clone(), "position": self._next}
        return {"generator": self.generator.get_state(), "position": 0}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` (``position`` defaults to 0).

        Chapter: 02_data
        """
        position = int(state.get("position", 0))
        if not 0 <= position < self.cfg.draw_batches:
            raise ValueError(
                f"pair sampler state: position {position} is outside a draw of "
                f"{self.cfg.draw_batches} batches"
            )
        self.generator.set_state(state["generator"])
        self._drawn = None
        if position:
            self._new_draw()
            self._next = position
