"""Variational Neural Cellular Automata in JAX.

The modules of this package are generated from the book's chapters by tools/export.py; read the
chapter named at the top of each block to learn what the code does and why. Importing the package
changes nothing, JAX's settings included: the `vnca` command and the book's chapters ask for one CPU
device per core themselves, with `vnca.devices.use_cpu_cores()` (the scaling-out chapter says why).
"""

# The version, in this one place: the wheel, `vnca --version` and CITATION.cff take it from here
# (tests/test_release.py checks that they agree). CHANGELOG.md says what each one changed.
__version__ = "0.2.0"
