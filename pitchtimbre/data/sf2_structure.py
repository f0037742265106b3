"""The structure of a SoundFont 2 file, checked before a synthesizer reads it.

A SoundFont is a RIFF file: an ``INFO`` list, the samples (``sdta``) and nine tables that
point into each other by index (``pdta``, the "hydra" of the SoundFont 2.04 specification):
presets point to preset zones (``pbag``), zones to generators and modulators, a generator
to an instrument, instruments to their zones, and so on down to sample headers (``shdr``)
that point into the sample data. tinysoundfont, the C library we render with, trusts those
indices: in a damaged file (one flipped byte in ``pbag`` is enough) they make it read
outside the file and kill the process, a notebook's kernel included, without a message.
:func:`check_hydra` checks those indices against the tables they point into, so such a
file is refused with its name instead.

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
"""``shdr`` type bit of an SF3 (Ogg Vorbis) sample: its start and end are byte offsets into
the sample data, its loop points frames of the decoded sample."""
CHECKED_ONCE = (b"sdta", b"pdta")
"""Lists, and chunks inside them, that must not repeat: a reader may take another copy
than the one checked (tinysoundfont takes the last)."""


def riff_lists(data: bytes, path: Path) -> dict[bytes, dict[bytes, tuple[int, int]]]:
    """The subchunks (offset, size) of each top-level ``LIST`` of a RIFF ``sfbk`` file,
    keyed by list type (``INFO``, ``sdta``, ``pdta``) and chunk id. A file that is not a
    RIFF ``sfbk`` file, a file or chunk that is cut short, or a repeated ``sdta``/``pdta``
    list or chunk inside one, is a :class:`DataError` naming ``path``.

    Chapter: 02_data
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise DataError(
            f"{path}: is not a SoundFont (no RIFF 'sfbk' header); pass a .sf2/.sf3 file"
        )
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    if riff_end > len(data):
        raise DataError(
            f"{path}: SoundFont is truncated ({len(data)} of {riff_end} bytes); "
            "download or copy it again"
        )
    lists: dict[bytes, dict[bytes, tuple[int, int]]] = {}
    pos = 12
    while pos + 8 <= riff_end:
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body, end = pos + 8, pos + 8 + size
        if end > riff_end:
            raise _corrupt(path, f"its {_name(cid)} chunk runs past the end of the file")
        if cid == b"LIST" and size >= 4:
            kind = data[body : body + 4]
            if kind in CHECKED_ONCE and kind in lists:
                raise _corrupt(path, f"two {_name(kind)} lists")
            inner, chunks = body + 4, lists.setdefault(kind, {})
            while inner + 8 <= end:
                iid, isize = data[inner : inner + 4], struct.unpack_from("<I", data, inner + 4)[0]
                if inner + 8 + isize > end:
                    raise _corrupt(path, f"its {_name(iid)} chunk runs past the end of its list")
                if kind in CHECKED_ONCE and iid in chunks:
                    raise _corrupt(path, f"two {_name(iid)} chunks in its {_name(kind)} list")
                chunks.setdefault(iid, (inner + 8, isize))
                inner += 8 + isize + (isize & 1)
        pos = end + (size & 1)
    return lists


def check_hydra(data: bytes, path: Path) -> dict[bytes, np.ndarray]:
    """The nine ``pdta`` tables of a SoundFont held in ``data``, each a record array, after
    checking, as the SoundFont 2.04 specification requires, that the indices by which the
    tables find each other (preset -> zones -> generators and modulators -> instrument ->
    zones -> sample header) rise and stay inside the table they point into, and that each
    sample's start and end lie inside the sample data. Loop points are not checked (readers
    clamp them, and many files hold loose ones in unlooped samples), nor are stereo links.
    A failed check is a :class:`DataError` naming ``path`` and what is wrong.

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
        start, end = local["start"].astype(np.int64), local["end"].astype(np.int64)
        if (start > end).any() or (end > limit).any():
            raise _corrupt(path, "a sample header points outside the sample data")
    return tables


def _name(chunk_id: bytes) -> str:
    return repr(chunk_id.decode("latin-1"))


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(
        f"{path}: SoundFont is damaged ({what}); the file is corrupt, download or copy it again"
    )
