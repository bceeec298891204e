"""Lightning data modules for eqprop-lightning."""

from datamodules.mnist import MNISTDataModule
from datamodules.synthetic import ToyDataModule

__all__ = ["MNISTDataModule", "ToyDataModule"]
