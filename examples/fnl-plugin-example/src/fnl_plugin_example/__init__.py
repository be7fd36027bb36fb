"""Example FnL plugin: a tiny convolutional backbone registered under ``fnl.backbones``."""
