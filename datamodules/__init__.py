"""Lightning data modules for eqprop-lightning."""

from datamodules.imdb import IMDBDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.snli import SNLIDataModule
from datamodules.synthetic import ToyDataModule

__all__ = ["IMDBDataModule", "MNISTDataModule", "SNLIDataModule", "ToyDataModule"]
