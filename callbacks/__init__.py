"""Lightning callbacks of eqprop-lightning."""

from callbacks.gdu import GDUCallback
from callbacks.results import ResultsWriter, write_json_atomic
from callbacks.resume import AtomicCheckpointIO, LastCheckpoint, RNGState

__all__ = [
    "AtomicCheckpointIO",
    "GDUCallback",
    "LastCheckpoint",
    "RNGState",
    "ResultsWriter",
    "write_json_atomic",
]
