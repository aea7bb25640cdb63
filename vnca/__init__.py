"""Variational Neural Cellular Automata in JAX.

The modules of this package are generated from the book's chapters by tools/export.py; read the
chapter named at the top of each block to learn what the code does and why.
"""

from vnca.devices import DeviceSettingError, check_device_setting, one_line_errors, use_cpu_cores

one_line_errors(DeviceSettingError)  # a setting to change, not a bug: no traceback (the scaling-out chapter)
check_device_setting()  # $JAX_NUM_CPU_DEVICES, before JAX reads it
use_cpu_cores()  # one CPU device per core, before JAX starts (see the scaling-out chapter)

# The version, in this one place: the wheel, `vnca --version` and CITATION.cff take it from here
# (tests/test_release.py checks that they agree). CHANGELOG.md says what each one changed.
__version__ = "0.2.0"
