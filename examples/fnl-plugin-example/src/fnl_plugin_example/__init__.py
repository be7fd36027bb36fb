"""Example FnL plugin: a tiny backbone (``example.tiny_convnet``) and a preset using it
(``example.tiny_convnet_b``)."""
