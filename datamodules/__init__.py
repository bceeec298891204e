"""Lightning data modules for eqprop-lightning."""

from .imdb import IMDBDataModule
from .mnist import MNISTDataModule
from .snli import SNLIDataModule
from .synthetic import ToyDataModule

__all__ = ["IMDBDataModule", "MNISTDataModule", "SNLIDataModule", "ToyDataModule"]
