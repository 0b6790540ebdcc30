"""Compression techniques: pruning, clustering, quantization and the compressed file format."""
