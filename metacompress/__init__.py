"""metacompress: learned, hardware-aware compression of PyTorch models."""

__version__ = "0.1.0"
