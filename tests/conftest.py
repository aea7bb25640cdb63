import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One JAX compilation cache for the session, shared by every process the tests start (pytest-xdist's
# workers, the `vnca` command, the book's kernels, the 8-device scripts): the suite compiles the same
# programs many times over, and on a CPU compiling is most of its time. XLA keys each entry on the
# program, the compile options and the devices, so a hit is the very executable a compile would have
# made. Set here, before any test module imports JAX; made fresh by the first process of each session
# (the workers inherit it), so no earlier run's or the user's cache is ever read.
if "PYTEST_XDIST_WORKER" in os.environ:
    JAX_CACHE = None  # a worker: its parent made the cache and removes it
else:
    JAX_CACHE = Path(tempfile.mkdtemp(prefix="vnca-tests-jax-cache-"))
    os.environ.update(JAX_COMPILATION_CACHE_DIR=str(JAX_CACHE),
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


# One JAX CPU device per core, as the `vnca` command and the chapters ask for (importing vnca changes
# no JAX setting): the tests run the code as a user's program does.
from vnca.devices import use_cpu_cores  # noqa: E402

use_cpu_cores()


def pytest_unconfigure(config):
    if JAX_CACHE is not None:
        shutil.rmtree(JAX_CACHE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never read or write the user's cache: each session gets its own."""
    previous = os.environ.get("VNCA_CACHE_DIR")
    os.environ["VNCA_CACHE_DIR"] = str(tmp_path_factory.mktemp("vnca-cache"))
    yield
    if previous is None:
        os.environ.pop("VNCA_CACHE_DIR", None)
    else:
        os.environ["VNCA_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def data_dir():
    """The folder the data is read from ($VNCA_DATA_DIR, made absolute), or None to download."""
    value = os.environ.get("VNCA_DATA_DIR")
    if value:
        os.environ["VNCA_DATA_DIR"] = str(Path(value).resolve())
    return os.environ.get("VNCA_DATA_DIR")


VNCA = Path(sys.executable).parent / "vnca"  # the installed command


def vnca_command(*args, timeout=900):
    """Run the installed `vnca` command; return the finished process."""
    return subprocess.run([str(VNCA), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def smoke_run(tmp_path, data_dir):
    """A function that trains a 2-step smoke run of a model with `vnca train` and returns its folder."""
    def train(model: str) -> Path:
        run = tmp_path / f"{model}-run"
        done = vnca_command("train", "--model", model, "--profile", "smoke", "--out", run, "--steps", 2,
                            "--batch-size", 4, "--no-progress")
        assert done.returncode == 0, done.stderr[-3000:]
        return run
    return train


CHROMIUM = Path("/usr/bin/chromium")  # tools/install-chromium.sh puts it there


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash tools/install-chromium.sh` (the setup does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(folder):
    """Serve `folder` over HTTP on a free local port, without logging each request; yield its URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def perturbed(model, seed=0, scale=0.05):
    """`model` with `scale` times standard normal noise added to every floating-point array: an untrained
    update rule's last layer is zero, and noise makes every NCA step matter."""
    import equinox as eqx
    import jax

    leaves, tree = jax.tree.flatten(model)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [leaf + scale * jax.random.normal(k, leaf.shape) if eqx.is_inexact_array(leaf)
                                     else leaf for leaf, k in zip(leaves, keys)])
