"""The built-in synthetic "toy humans": body model, renderer, generator and surface."""
