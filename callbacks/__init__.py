"""Lightning callbacks of eqprop-lightning."""

from callbacks.results import ResultsWriter, write_json_atomic

__all__ = ["ResultsWriter", "write_json_atomic"]
