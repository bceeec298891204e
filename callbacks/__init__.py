"""Lightning callbacks of eqprop-lightning."""

from .gdu import GDUCallback
from .predictions import PredictionWriter
from .results import ResultsWriter
from .resume import AtomicCheckpointIO, LastCheckpoint

__all__ = [
    "AtomicCheckpointIO",
    "GDUCallback",
    "LastCheckpoint",
    "PredictionWriter",
    "ResultsWriter",
]
