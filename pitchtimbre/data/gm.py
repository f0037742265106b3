"""General MIDI program names and families, the instrument labels of rendered notes.

Chapter: 02_data
"""

from __future__ import annotations

import re

import pretty_midi

GM_FAMILIES: tuple[str, ...] = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
)
"""The 16 GM families, eight programs each (program // 8)."""


def gm_family(program: int) -> int:
    """Index of a GM program's family in :data:`GM_FAMILIES`.

    Chapter: 02_data
    """
    return program // 8


def gm_program_name(program: int) -> str:
    """The General MIDI name of a program, e.g. 0 -> 'Acoustic Grand Piano'.

    Chapter: 02_data
    """
    return pretty_midi.program_to_instrument_name(program)


def slug(text: str) -> str:
    """Lower-case ASCII with underscores, safe in file names: 'Honky Tonk' -> 'honky_tonk'.

    Chapter: 02_data
    """
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"
