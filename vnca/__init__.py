"""Variational Neural Cellular Automata in JAX.

The modules of this package are generated from the book's chapters by tools/export.py; read the
chapter named at the top of each block to learn what the code does and why.
"""

__version__ = "0.1.0"
