"""Lightning callbacks of eqprop-lightning."""

from .gdu import GDUCallback
from .results import ResultsWriter, write_json_atomic
from .resume import AtomicCheckpointIO, LastCheckpoint, RNGState

__all__ = [
    "AtomicCheckpointIO",
    "GDUCallback",
    "LastCheckpoint",
    "RNGState",
    "ResultsWriter",
    "write_json_atomic",
]
