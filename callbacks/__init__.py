"""Lightning callbacks of eqprop-lightning."""

from callbacks.gdu import GDUCallback
from callbacks.results import ResultsWriter, write_json_atomic

__all__ = ["GDUCallback", "ResultsWriter", "write_json_atomic"]
