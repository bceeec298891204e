"""Dynamics of the convergent RNNs: pure tensor code, no Lightning."""

from eqprop_lightning.nets.activations import ACTIVATIONS, Activation, get_activation
from eqprop_lightning.nets.conv import ConvPrototypical, ConvStaticTerms
from eqprop_lightning.nets.fc import EnergyBasedFC, LayeredFC, PrototypicalFC, StaticTerms
from eqprop_lightning.nets.hopfield import HopfieldClassifier, HopfieldStaticTerms
from eqprop_lightning.nets.protocol import NET_FLAGS, Net, State, Static
from eqprop_lightning.nets.readout import SoftmaxReadout, output_cost
from eqprop_lightning.nets.toy import ToyEnergyBased

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ConvPrototypical",
    "ConvStaticTerms",
    "EnergyBasedFC",
    "HopfieldClassifier",
    "HopfieldStaticTerms",
    "LayeredFC",
    "NET_FLAGS",
    "Net",
    "PrototypicalFC",
    "State",
    "Static",
    "SoftmaxReadout",
    "StaticTerms",
    "ToyEnergyBased",
    "get_activation",
    "output_cost",
]
