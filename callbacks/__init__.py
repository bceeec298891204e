"""Lightning callbacks of eqprop-lightning."""

from callbacks.gdu import GDUCallback
from callbacks.results import ResultsWriter, write_json_atomic
from callbacks.resume import RNGState

__all__ = ["GDUCallback", "RNGState", "ResultsWriter", "write_json_atomic"]
