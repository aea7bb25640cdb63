"""`vnca.devices`: one JAX CPU device per core when asked (the `vnca` program asks; importing vnca does not), never
overriding a choice or a started JAX."""

import os
import platform
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


def test_importing_vnca_changes_no_jax_setting():
    assert devices_after("import vnca, jax") == 1  # JAX's own default on a CPU
    assert devices_after("import vnca.cli, vnca.train, vnca.evaluate, jax") == 1


def test_use_cpu_cores_gives_one_device_per_core():
    assert devices_after("import jax\nfrom vnca.devices import use_cpu_cores\nuse_cpu_cores()") == \
        cpu_device_count(cpu_cores())


def test_the_vnca_program_asks_for_one_device_per_core():
    code = ("import vnca.cli\nvnca.cli.main = lambda argv: 0  # the command itself is not the point\n"
            "from vnca.program import main\nassert main([]) == 0\nimport jax")
    assert devices_after(code) == cpu_device_count(cpu_cores())


def test_a_chosen_count_is_kept():
    code = "import jax\nfrom vnca.devices import use_cpu_cores\nassert use_cpu_cores() is None"
    assert devices_after(code, JAX_NUM_CPU_DEVICES="1") == 1
    flag = "--xla_force_host_platform_device_count=3"
    assert devices_after(code, XLA_FLAGS=flag) == 3


def test_a_started_jax_is_left_alone():
    code = "import jax; jax.devices()\nfrom vnca.devices import use_cpu_cores\nassert use_cpu_cores(4) is None"
    assert devices_after(code) == 1


def test_an_explicit_count_is_used():
    # a second call leaves the first's count; an explicit count replaces a default
    assert devices_after("import jax\nimport vnca.devices as d\nassert d.use_cpu_cores() is not None\n"
                         "assert d.use_cpu_cores() is None\n"
                         "jax.config.update('jax_num_cpu_devices', -1)\nassert d.use_cpu_cores(4) == 4") == 4


def cache_after(code: str, **env) -> str:
    """What `use_compilation_cache()` returned, and JAX's cache folder, in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION", "VNCA_COMPILATION"))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**clean, "JAX_PLATFORMS": "cpu", **env}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


SETTINGS = """
import jax
from vnca.devices import use_compilation_cache
print(use_compilation_cache())
print(jax.config.jax_compilation_cache_dir)
"""


def test_the_compilation_cache_is_on_and_kept_per_jax_version_and_cpu_in_vncas_cache(tmp_path):
    import jax
    import jaxlib

    from vnca.devices import host_cpu

    folder = tmp_path / "compiled" / f"jax-{jax.__version__}-jaxlib-{jaxlib.__version__}-{host_cpu()}"
    for on in ({}, {"VNCA_COMPILATION_CACHE": "1"}):  # on by default
        assert cache_after(SETTINGS, VNCA_CACHE_DIR=str(tmp_path), **on).splitlines() == [str(folder)] * 2


def test_another_kind_of_cpu_gets_another_cache_folder(monkeypatch):
    import vnca.devices

    here = vnca.devices.host_cpu()
    assert here == vnca.devices.host_cpu() and here.startswith(platform.machine())
    monkeypatch.setattr(vnca.devices.Path, "read_text", lambda self, *a, **k: "flags : fpu sse sse2\n")
    assert vnca.devices.host_cpu() != here


def test_the_compilation_cache_can_be_switched_off_and_a_chosen_one_is_kept(tmp_path):
    off = cache_after(SETTINGS, VNCA_CACHE_DIR=str(tmp_path), VNCA_COMPILATION_CACHE="0")
    assert off.splitlines() == ["None", "None"]
    mine = str(tmp_path / "mine")
    assert cache_after(SETTINGS, VNCA_CACHE_DIR=str(tmp_path), VNCA_COMPILATION_CACHE="1",
                       JAX_COMPILATION_CACHE_DIR=mine).splitlines() == ["None", mine]


def test_a_second_process_loads_a_compiled_program_from_the_cache(tmp_path):
    """A program that takes over the minimum compile time (1 s, JAX's default; 0 here) is written by
    the first process and read by the second, which then compiles nothing."""
    code = ("import jax, jax.numpy as jnp\nfrom vnca.devices import use_compilation_cache\n"
            "use_compilation_cache()\njax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
            "from jax._src import monitoring\nhits = []\n"
            "monitoring.register_event_listener(lambda e, **k: hits.append(e) if 'cache_hits' in e else None)\n"
            "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()\nprint(len(hits))")
    first = cache_after(code, VNCA_CACHE_DIR=str(tmp_path), VNCA_COMPILATION_CACHE="1")
    assert list((tmp_path / "compiled").rglob("*")), "nothing written"
    second = cache_after(code, VNCA_CACHE_DIR=str(tmp_path), VNCA_COMPILATION_CACHE="1")
    assert first == "0" and int(second) >= 1  # the jitted function, and jnp.ones


def test_huge_pages_are_asked_for_once_with_glibc_and_can_be_switched_off():
    from vnca.devices import HUGE_PAGES, huge_page_environment

    glibc = ("glibc", "2.36")
    assert huge_page_environment({"A": "1"}, glibc) == {"A": "1", "GLIBC_TUNABLES": HUGE_PAGES}
    # another setting of the user's is kept
    assert huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, glibc)["GLIBC_TUNABLES"] == \
        f"glibc.malloc.arena_max=2:{HUGE_PAGES}"
    assert huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, glibc) is None  # the user's choice
    assert huge_page_environment({"GLIBC_TUNABLES": HUGE_PAGES}, glibc) is None  # set already: no second start
    assert huge_page_environment({"VNCA_HUGE_PAGES": "0"}, glibc) is None
    assert huge_page_environment({}, ("glibc", "2.31")) is None  # before the setting existed
    assert huge_page_environment({}, ("", "")) is None  # macOS, musl: no glibc


def test_the_vnca_command_runs_again_with_huge_pages_and_a_call_from_python_does_not():
    import platform

    from vnca.devices import HUGE_PAGES

    if huge_page_environment_for_here() is None:
        pytest.skip("this machine's C library is not glibc 2.35 or later")
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "VNCA_HUGE_PAGES")}
    code = ("import os, sys\nfrom vnca.devices import use_huge_pages\nprint('start', flush=True)\n"
            "use_huge_pages()\nprint(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", code, "x", "y"], capture_output=True, text=True, env=clean,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # started twice (the second time with the setting, the same arguments), then went on
    assert result.stdout.splitlines() == ["start", "start", f"{HUGE_PAGES} ['x', 'y']"], platform.libc_ver()
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**clean, "VNCA_HUGE_PAGES": "0"}, timeout=120)
    assert off.stdout.splitlines() == ["start", "None []"]
    # the program's main, called from Python with its arguments, leaves the process as it is
    version = subprocess.run([sys.executable, "-c", "import os, vnca.program as p\ntry:\n    p.main(['--version'])\n"
                              "except SystemExit:\n    pass\nprint(os.environ.get('GLIBC_TUNABLES'))"],
                             capture_output=True, text=True, env=clean, timeout=120)
    import vnca

    assert version.stdout.splitlines() == [f"vnca {vnca.__version__}", "None"], version.stdout + version.stderr


def huge_page_environment_for_here():
    from vnca.devices import huge_page_environment

    return huge_page_environment({})
