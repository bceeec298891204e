"""eqprop-lightning: Equilibrium Propagation and BPTT for convergent RNNs with PyTorch Lightning."""

__version__ = "0.1.0"
