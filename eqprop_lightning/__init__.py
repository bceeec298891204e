"""eqprop-lightning: Equilibrium Propagation and BPTT for convergent RNNs with PyTorch Lightning.

``from eqprop_lightning import EqPropModule`` (the LightningModule) is imported on first use, so
that ``import eqprop_lightning`` (and ``eqprop --help``) loads neither torch nor Lightning.
"""

__version__ = "0.1.0"
__all__ = ["EqPropModule", "__version__"]


def __getattr__(name: str) -> object:
    if name == "EqPropModule":
        from eqprop_lightning.module import EqPropModule

        return EqPropModule
    raise AttributeError(f"module 'eqprop_lightning' has no attribute {name!r}")
