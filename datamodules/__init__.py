"""Lightning data modules for eqprop-lightning."""

from datamodules.mnist import MNISTDataModule

__all__ = ["MNISTDataModule"]
