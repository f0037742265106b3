"""The structure of a SoundFont 2 file, checked before a synthesizer reads it.

A SoundFont is a RIFF file: an ``INFO`` list, the samples (``sdta``) and nine tables that
point into each other by index (``pdta``, the "hydra" of the SoundFont 2.04 specification):
presets point to preset zones (``pbag``), zones to generators and modulators, a generator
to an instrument, instruments to their zones, and so on down to sample headers (``shdr``)
that point into the sample data. The synthesizers we render with are C libraries that trust
those indices; a damaged file (one flipped byte in ``pbag`` is enough) makes them read
outside the file and kills the process, a notebook's kernel included, without a message.
:func:`check_hydra` checks every index against the table it points into, so such a file
is refused with its name instead.

Chapter: 02_data
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

_BAG = np.dtype([("gen", "<u2"), ("mod", "<u2")])
_MODULATOR = np.dtype(
    [("src", "<u2"), ("dest", "<u2"), ("amount", "<i2"), ("amt_src", "<u2"), ("trans", "<u2")]
)
_GENERATOR = np.dtype([("oper", "<u2"), ("amount", "<u2")])
RECORDS = {
    b"phdr": np.dtype(
        [
            ("name", "S20"),
            ("program", "<u2"),
            ("bank", "<u2"),
            ("bag", "<u2"),
            ("library", "<u4"),
            ("genre", "<u4"),
            ("morphology", "<u4"),
        ]
    ),
    b"pbag": _BAG,
    b"pmod": _MODULATOR,
    b"pgen": _GENERATOR,
    b"inst": np.dtype([("name", "S20"), ("bag", "<u2")]),
    b"ibag": _BAG,
    b"imod": _MODULATOR,
    b"igen": _GENERATOR,
    b"shdr": np.dtype(
        [
            ("name", "S20"),
            ("start", "<u4"),
            ("end", "<u4"),
            ("start_loop", "<u4"),
            ("end_loop", "<u4"),
            ("rate", "<u4"),
            ("pitch", "u1"),
            ("correction", "i1"),
            ("link", "<u2"),
            ("type", "<u2"),
        ]
    ),
}
"""The nine tables of ``pdta`` and their record layouts (46, 4, 10, 4, 22, 4, 10, 4, 46
bytes). Each table ends with a terminal record that only marks where the last entry ends."""

GEN_INSTRUMENT = 41
"""The preset generator whose amount is an index into ``inst``."""
GEN_SAMPLE_ID = 53
"""The instrument generator whose amount is an index into ``shdr``."""
SAMPLE_ROM = 0x8000
"""``shdr`` type bit of a sample in a sound card's ROM: its offsets are not into this file."""
SAMPLE_COMPRESSED = 0x10
"""``shdr`` type bit of an SF3 (Ogg Vorbis) sample: its offsets are bytes, not samples."""


def riff_lists(data: bytes, path: Path) -> dict[bytes, dict[bytes, tuple[int, int]]]:
    """The subchunks (offset, size) of each top-level ``LIST`` of a RIFF ``sfbk`` file,
    keyed by list type (``INFO``, ``sdta``, ``pdta``) and chunk id. A chunk that claims more
    bytes than its list holds is a :class:`DataError` naming ``path``.

    Chapter: 02_data
    """
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    lists: dict[bytes, dict[bytes, tuple[int, int]]] = {}
    pos = 12
    while pos + 8 <= riff_end:
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body, end = pos + 8, pos + 8 + size
        if end > riff_end:
            raise _corrupt(path, f"its {cid!r} chunk runs past the end of the file")
        if cid == b"LIST" and size >= 4:
            inner, chunks = body + 4, lists.setdefault(data[body : body + 4], {})
            while inner + 8 <= end:
                iid, isize = data[inner : inner + 4], struct.unpack_from("<I", data, inner + 4)[0]
                if inner + 8 + isize > end:
                    raise _corrupt(path, f"its {iid!r} chunk runs past the end of its list")
                chunks.setdefault(iid, (inner + 8, isize))
                inner += 8 + isize + (isize & 1)
        pos = end + (size & 1)
    return lists


def check_hydra(data: bytes, path: Path) -> dict[bytes, np.ndarray]:
    """The nine ``pdta`` tables of a SoundFont held in ``data``, each a record array, after
    checking that every index they hold points inside the table (or sample data) it names,
    as the SoundFont 2.04 specification requires. Anything else is a :class:`DataError`
    naming ``path`` and what is wrong.

    Chapter: 02_data
    """
    lists = riff_lists(data, path)
    pdta = lists.get(b"pdta", {})
    tables: dict[bytes, np.ndarray] = {}
    for cid, dtype in RECORDS.items():
        if cid not in pdta:
            raise _corrupt(path, f"it has no {cid.decode()} table")
        start, size = pdta[cid]
        if size % dtype.itemsize or size == 0:
            raise _corrupt(
                path,
                f"its {cid.decode()} table is {size} bytes, not whole {dtype.itemsize}-byte records",
            )
        tables[cid] = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=start)
    n = {cid.decode(): len(t) for cid, t in tables.items()}
    for cid in (b"phdr", b"inst", b"shdr"):
        if len(tables[cid]) < 2:
            raise _corrupt(
                path, f"its {cid.decode()} table holds no entry before its terminal record"
            )

    def indices(table: str, field: str, into: str) -> None:
        values = tables[table.encode()][field].astype(np.int64)
        if (np.diff(values) < 0).any() or values[-1] > n[into] - 1:
            raise _corrupt(
                path,
                f"its {table} table's {field} indices decrease or point past the {n[into]} "
                f"records of {into}",
            )

    indices("phdr", "bag", "pbag")
    indices("pbag", "gen", "pgen")
    indices("pbag", "mod", "pmod")
    indices("inst", "bag", "ibag")
    indices("ibag", "gen", "igen")
    indices("ibag", "mod", "imod")
    for table, oper, into in (("pgen", GEN_INSTRUMENT, "inst"), ("igen", GEN_SAMPLE_ID, "shdr")):
        gens = tables[table.encode()]
        # the last record of inst and shdr is the terminal one, never a target
        if (gens["amount"][gens["oper"] == oper] > n[into] - 2).any():
            raise _corrupt(path, f"its {table} table names an entry past the end of {into}")

    samples = tables[b"shdr"][:-1]
    local = samples[(samples["type"] & SAMPLE_ROM) == 0]
    smpl = lists.get(b"sdta", {}).get(b"smpl")
    if len(local) and smpl is None:
        raise _corrupt(path, "it has sample headers but no sample data (sdta/smpl)")
    if len(local):
        compressed = (local["type"] & SAMPLE_COMPRESSED) != 0
        limit = np.where(compressed, smpl[1], smpl[1] // 2)  # bytes for SF3, else samples
        ends = [local[f].astype(np.int64) for f in ("end", "start_loop", "end_loop")]
        starts = local["start"].astype(np.int64)
        if (starts > ends[0]).any() or any((e > limit).any() for e in ends):
            raise _corrupt(path, "a sample header points outside the sample data")
    return tables


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(
        f"{path}: SoundFont is damaged ({what}); the file is corrupt, download or copy it again"
    )
