"""Errors the package raises for bad input: one line, naming the file or field and what to do.

Chapter: 02_data
"""

from __future__ import annotations


class PitchTimbreError(Exception):
    """Base class: a one-line message meant for the user, never a traceback to read.

    Chapter: 02_data
    """


class ConfigError(PitchTimbreError, ValueError):
    """A configuration field holds a value it cannot take.

    Chapter: 02_data
    """


class DataError(PitchTimbreError):
    """A data file (SoundFont, examples.json, wav, archive) is missing, corrupt or empty.

    Chapter: 02_data
    """


class CheckpointError(PitchTimbreError):
    """A checkpoint is missing, corrupt, or belongs to another architecture.

    Chapter: 05_training
    """


class TrainingDiverged(PitchTimbreError):
    """The loss became NaN or infinite; the last good checkpoint is kept.

    Chapter: 05_training
    """


class WorkerCrashed(PitchTimbreError):
    """A worker process died (a segfault, or the system ran out of memory) instead of
    raising an error.

    Chapter: 05_training
    """


class TrainingInterrupted(PitchTimbreError):
    """A worker process's model stopped on Ctrl-C (at a logged step, saved), to continue
    later.

    Chapter: 05_training
    """
