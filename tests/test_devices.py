"""`vnca.devices`: one JAX CPU device per core by default, never overriding a choice or a started JAX."""

import os
import subprocess
import sys

import pytest

from vnca.devices import MAX_CPU_DEVICES, cpu_cores, cpu_device_count


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (3, 2), (4, 4), (6, 4), (8, 8), (12, 8), (64, 8)])
def test_device_count_is_a_power_of_two_up_to_the_cores(cores, expected):
    assert cpu_device_count(cores) == expected
    assert cpu_device_count(cores) <= MAX_CPU_DEVICES


def devices_after(code: str, **env) -> int:
    """The number of JAX devices a fresh Python process sees after `code`."""
    clean = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    result = subprocess.run([sys.executable, "-c", code + "\nprint(jax.device_count())"],
                            capture_output=True, text=True, env={**clean, "JAX_PLATFORMS": "cpu", **env},
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1])


def test_import_gives_one_device_per_core():
    assert devices_after("import vnca, jax") == cpu_device_count(cpu_cores())


def test_a_chosen_count_is_kept():
    assert devices_after("import vnca, jax", JAX_NUM_CPU_DEVICES="1") == 1
    flag = "--xla_force_host_platform_device_count=3"
    assert devices_after("import vnca, jax", XLA_FLAGS=flag) == 3


def test_a_started_jax_is_left_alone():
    assert devices_after("import jax; jax.devices()\nimport vnca") == 1
    code = "import jax; jax.devices()\nfrom vnca.devices import use_cpu_cores\nassert use_cpu_cores(4) is None"
    assert devices_after(code) == 1


def test_an_explicit_count_is_used():
    # importing vnca chose the default count; a second call leaves it, an explicit count replaces it
    assert devices_after("import jax\nimport vnca.devices as d\nassert d.use_cpu_cores() is None\n"
                         "jax.config.update('jax_num_cpu_devices', -1)\nassert d.use_cpu_cores(4) == 4") == 4
