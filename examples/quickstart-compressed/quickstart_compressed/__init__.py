"""Flower's PyTorch quickstart, with fedcompress added in a few lines."""
