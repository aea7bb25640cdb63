"""The decoders in the browser: the file format, and the JavaScript decoder step for step against JAX."""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import serving
from vnca import pretrained
from vnca.doubling import double
from vnca.live import BrowserFileError, export_for_browser, read_browser_file, rule_tensors, write_browser_file
from vnca.nca import run

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "_static" / "vnca-live.js"


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_dir):
    folder = tmp_path_factory.mktemp("live")
    for name in ("nondoubling-laptop", "doubling-laptop"):
        export_for_browser(name, folder / f"{name}.vncaweb", examples=4)
    return folder


def test_the_file_holds_the_rule_and_the_examples_exactly(files):
    header, tensors = read_browser_file(files / "nondoubling-laptop.vncaweb")
    model = pretrained.load("nondoubling-laptop")
    for key, value in rule_tensors(model.decoder.rule).items():
        np.testing.assert_array_equal(tensors[f"rule.{key}"], value)
    assert header["decoder"] == {"channels": 32, "hidden": 32, "residual_blocks": 0, "elu_after_perception": True,
                                 "update_probability": model.decoder.config.update_probability,
                                 "kind": "nondoubling", "side": 32, "test_steps": 32, "max_steps": 40}
    rows = header["examples"]["test_rows"]
    assert len(rows) == 4 and rows == sorted(rows)
    from vnca.data import load_binarized_mnist

    np.testing.assert_array_equal(tensors["examples.images"], load_binarized_mnist().test[rows])
    means, _ = jax.vmap(model.encoder)(jnp.asarray(tensors["examples.images"]))
    np.testing.assert_allclose(tensors["examples.latents"], means, rtol=1e-6, atol=1e-6)
    doubling, _ = read_browser_file(files / "doubling-laptop.vncaweb")
    blocks = pretrained.load("doubling-laptop").decoder.config.residual_blocks  # the paper's 4
    assert doubling["decoder"]["kind"] == "doubling" and doubling["decoder"]["residual_blocks"] == blocks
    # small enough for a page: 18,752 numbers of the rule and 8 examples, 108 KiB (the one-block rule's
    # file was under 100,000 bytes); the live page's files together stay under 1 MB (issue 35)
    assert (files / "doubling-laptop.vncaweb").stat().st_size < 128 * 1024


def test_a_changed_or_cut_file_is_refused(tmp_path):
    path = tmp_path / "m.vncaweb"
    write_browser_file(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"name": "m"})
    header, tensors = read_browser_file(path)
    np.testing.assert_array_equal(tensors["a"], np.arange(6).reshape(2, 3))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    (tmp_path / "changed.vncaweb").write_bytes(bytes(raw))
    with pytest.raises(BrowserFileError, match="checksum"):
        read_browser_file(tmp_path / "changed.vncaweb")
    (tmp_path / "cut.vncaweb").write_bytes(path.read_bytes()[:-4])
    with pytest.raises(BrowserFileError, match="checksum"):
        read_browser_file(tmp_path / "cut.vncaweb")
    (tmp_path / "other.vncaweb").write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(BrowserFileError, match="not a vnca file"):
        read_browser_file(tmp_path / "other.vncaweb")


def test_only_nca_decoders_go_to_a_page(tmp_path, data_dir):
    with pytest.raises(BrowserFileError, match="only the NCA decoders.*ConvDecoder"):
        export_for_browser("baseline-laptop", tmp_path / "b.vncaweb")
    assert not (tmp_path / "b.vncaweb").exists()


@pytest.fixture(scope="module")
def page(files, browser):
    shutil.copy(SCRIPT, files / SCRIPT.name)
    (files / "harness.html").write_text(  # no favicon request
        f'<!doctype html><link rel="icon" href="data:,"><script src="{SCRIPT.name}"></script>')
    with serving(files) as url:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(f"{url}/harness.html", wait_until="load")
        yield page
        assert errors == []
        page.close()


def _js(page, body: str, *args):
    """Run `body` with the loaded decoders `nd` and `db` in scope; returns what it returns."""
    return page.evaluate(f"""async (args) => {{
        const nd = await VNCALive.load("nondoubling-laptop.vncaweb");
        const db = await VNCALive.load("doubling-laptop.vncaweb");
        {body}
    }}""", list(args))


@pytest.mark.slow
def test_javascript_nondoubling_steps_equal_jax(page, files):
    model = pretrained.load("nondoubling-laptop")
    decoder = model.decoder
    steps = decoder.config.test_steps
    got = np.array(_js(page, """
        const {state, side} = nd.seed(nd.latent(1));
        for (let s = 0; s < args[0]; s++) nd.step(state, side, 1);
        return Array.from(state);""", steps), np.float32).reshape(32, 32, -1)
    _, tensors = read_browser_file(files / "nondoubling-laptop.vncaweb")
    z = jnp.asarray(tensors["examples.latents"][1])
    want = np.asarray(run(decoder.rule, decoder.seed(z), steps))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    # the picture: the same digit, pixel for pixel
    pixels = np.array(_js(page, """
        const {state, side} = nd.seed(nd.latent(1));
        for (let s = 0; s < args[0]; s++) nd.step(state, side, 1);
        return Array.from(nd.pixels(state, side));""", steps)).reshape(32, 32)
    np.testing.assert_allclose(pixels, jax.nn.sigmoid(want[..., 0]), atol=1e-4)


@pytest.mark.slow
def test_javascript_doubling_growth_equals_jax(page, files):
    model = pretrained.load("doubling-laptop")
    decoder = model.decoder
    got = _js(page, """
        const sides = [];
        const grid = db.growDoubling(db.latent(2), (g, what) => sides.push([g.side, what]), 1);
        return {state: Array.from(grid.state), sides};""")
    c = decoder.config
    assert got["sides"][0] == [1, "seed"] and got["sides"][-1] == [32, "step"]
    assert len(got["sides"]) == 1 + c.doublings * (1 + c.steps_per_doubling)
    _, tensors = read_browser_file(files / "doubling-laptop.vncaweb")
    state, _ = decoder.grow(jnp.asarray(tensors["examples.latents"][2]))
    np.testing.assert_allclose(np.array(got["state"], np.float32).reshape(state.shape), state, rtol=1e-3, atol=1e-3)
    # one doubling alone is exact
    small = np.array(_js(page, """
        const s = Float32Array.from({length: 2 * 2 * 32}, (_, k) => k);
        return Array.from(db.double(s, 2).state);"""), np.float32)
    np.testing.assert_array_equal(small.reshape(4, 4, 32), double(jnp.arange(2 * 2 * 32.0).reshape(2, 2, 32)))


@pytest.mark.slow
def test_damage_zeroes_exactly_the_cells_in_the_brush(page):
    got = np.array(_js(page, """
        const {state, side} = nd.seed(nd.latent(0));
        nd.damage(state, side, 10, 20, 4);
        return Array.from(state);"""), np.float32).reshape(32, 32, 32)
    y, x = np.mgrid[:32, :32]
    brush = (x - 10) ** 2 + (y - 20) ** 2 <= 16
    assert brush.sum() == 49
    assert np.all(got[brush] == 0) and np.all(np.any(got[~brush] != 0, axis=-1))


@pytest.mark.slow
def test_a_changed_file_is_refused_in_the_browser(page, files):
    raw = bytearray((files / "doubling-laptop.vncaweb").read_bytes())
    raw[-5] ^= 1
    (files / "changed.vncaweb").write_bytes(bytes(raw))
    message = page.evaluate("""async () => {
        try { await VNCALive.load("changed.vncaweb"); return "loaded"; }
        catch (e) { return e.message; } }""")
    assert "checksum" in message


def test_the_export_web_command(tmp_path, data_dir):
    from conftest import vnca_command

    out = tmp_path / "d.vncaweb"
    done = vnca_command("export-web", "doubling-laptop", "--out", str(out), "--examples", "3")
    assert done.returncode == 0, done.stderr
    assert f"{out}: doubling decoder, 3 examples" in done.stdout
    assert read_browser_file(out)[0]["name"] == "doubling-laptop"
    refused = vnca_command("export-web", "baseline-laptop", "--out", str(tmp_path / "b.vncaweb"))
    assert refused.returncode == 2 and "only the NCA decoders" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "b.vncaweb").exists()
    unknown = vnca_command("export-web", "nope", "--out", str(tmp_path / "n.vncaweb"))
    assert unknown.returncode == 2 and "nope" in unknown.stderr


@pytest.fixture(scope="module")
def demo(page, files):
    (files / "demo.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><script src="vnca-live.js"></script>'
        '<div class="vnca-live" id="nd" data-model="nondoubling-laptop.vncaweb"></div>'
        '<div class="vnca-live" id="db" data-model="doubling-laptop.vncaweb"></div>')
    page.goto(page.url.replace("harness.html", "demo.html"), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.vnca-live-ready').length == 2")
    return page


@pytest.mark.slow
def test_a_scripted_drag_zeroes_exactly_the_cells_under_the_brush(demo):
    demo.evaluate("() => { const v = document.getElementById('nd').vnca; v.pause(); v.reset(); }")
    box = demo.locator("#nd canvas.vnca-live-canvas").bounding_box()
    start, end, moves = (box["x"] + 40.5, box["y"] + 60.5), (box["x"] + 200.5, box["y"] + 120.5), 8
    demo.mouse.move(*start)
    demo.mouse.down()
    demo.mouse.move(*end, steps=moves)
    demo.mouse.up()
    state = np.array(demo.evaluate("() => Array.from(document.getElementById('nd').vnca.grid().state)"),
                     np.float32).reshape(32, 32, 32)
    brush = int(demo.evaluate("() => document.querySelectorAll('#nd input[type=range]')[1].value"))
    points = [start] + [(start[0] + (end[0] - start[0]) * i / moves, start[1] + (end[1] - start[1]) * i / moves)
                        for i in range(1, moves + 1)]
    y, x = np.mgrid[:32, :32]
    expected = np.zeros((32, 32), bool)
    for px, py in points:
        cx, cy = int((px - box["x"]) / box["width"] * 32), int((py - box["y"]) / box["height"] * 32)
        expected |= (x - cx) ** 2 + (y - cy) ** 2 <= brush**2
    zeroed = np.all(state == 0, axis=-1)
    np.testing.assert_array_equal(zeroed, expected)
    assert 0 < expected.sum() < 32 * 32 and demo.evaluate("() => document.getElementById('nd').vnca.steps()") == 0


@pytest.mark.slow
def test_the_interpolation_slider_ends_on_the_two_decoded_latents(demo, files):
    model = pretrained.load("doubling-laptop")
    _, tensors = read_browser_file(files / "doubling-laptop.vncaweb")
    a, b = demo.evaluate("() => document.getElementById('db').vnca.latents()")
    for value, index in ((1, b), (0, a)):
        demo.evaluate(f"""() => {{ const s = document.getElementById('db').vnca.slider;
            s.value = {value}; s.dispatchEvent(new Event('input')); }}""")
        demo.wait_for_function("() => document.getElementById('db').vnca.done()")
        shown = np.array(demo.evaluate("() => Array.from(document.getElementById('db').vnca.pixels())"))
        logits = model.decoder(jnp.asarray(tensors["examples.latents"][index]))
        np.testing.assert_allclose(shown.reshape(32, 32), jax.nn.sigmoid(logits), atol=1e-4)


# ------------------------------------------------------------------------ issue 38, cases 6 and 7

@pytest.mark.parametrize("old, new", [(b'"steps_per_doubling":8', b'"steps_per_doubling":9'),  # another digit
                                      (b'"hidden":32', b'"hidden":16'),  # the weights read wrongly
                                      (b'"kind":"doubling"', b'"kind":"nondoublin"')])  # the other decoder
def test_the_header_is_under_the_checksum_too(tmp_path, files, old, new):
    raw = (files / "doubling-laptop.vncaweb").read_bytes()
    assert raw.count(old) == 1
    (tmp_path / "edited.vncaweb").write_bytes(raw.replace(old, new))
    with pytest.raises(BrowserFileError, match="checksum"):
        read_browser_file(tmp_path / "edited.vncaweb")


@pytest.mark.slow
def test_a_changed_header_is_refused_in_the_browser(page, files):
    raw = (files / "doubling-laptop.vncaweb").read_bytes()
    (files / "header-changed.vncaweb").write_bytes(raw.replace(b'"steps_per_doubling":8', b'"steps_per_doubling":9'))
    message = page.evaluate("""async () => {
        try { await VNCALive.load("header-changed.vncaweb"); return "loaded"; }
        catch (e) { return e.message; } }""")
    assert "checksum" in message


def _site(folder: Path, files: Path) -> Path:
    """A site laid out as the book's: the script and the model files under _static/, a page under book/."""
    (folder / "_static" / "live").mkdir(parents=True)
    shutil.copy(SCRIPT, folder / "_static" / SCRIPT.name)
    for name in ("nondoubling-laptop", "doubling-laptop"):
        shutil.copy(files / f"{name}.vncaweb", folder / "_static" / "live")
    (folder / "index.html").write_text('<!doctype html><a href="book/live.html">live</a>')
    (folder / "book").mkdir()
    (folder / "book" / "live.html").write_text(
        '<!doctype html><link rel="icon" href="data:,"><script src="../_static/vnca-live.js"></script>'
        '<div class="vnca-live" data-model="../_static/live/nondoubling-laptop.vncaweb"></div>'
        '<div class="vnca-live" data-model="../_static/live/doubling-laptop.vncaweb"></div>')
    return folder


@pytest.mark.slow
def test_the_site_opened_as_the_readme_says_runs_its_demos(tmp_path, files, browser):
    import os
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "http://localhost:8000" in readme  # the way the README gives
    makefile = (ROOT / "Makefile").read_text()
    assert "SITE ?= _build/html" in makefile and "PORT ?= 8000" in makefile
    site = _site(tmp_path / "html", files)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["make", "--no-print-directory", "serve", f"SITE={site}", f"PORT={port}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://localhost:{port}/index.html", timeout=2)
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, server.stdout.read()
                time.sleep(0.2)
        page = browser.new_page()
        try:
            page.goto(f"http://localhost:{port}/book/live.html", wait_until="load")
            page.wait_for_function("() => document.querySelectorAll('.vnca-live-ready').length == 2", timeout=60_000)
            assert page.evaluate("() => document.querySelectorAll('.vnca-live-error').length") == 0
        finally:
            page.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the server it started
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_page_opened_as_a_file_says_how_to_serve_it(tmp_path, files, browser):
    site = _site(tmp_path / "html", files)
    page = browser.new_page()
    try:
        page.goto((site / "book" / "live.html").as_uri(), wait_until="load")
        page.wait_for_function("() => document.querySelectorAll('.vnca-live-error').length == 2", timeout=60_000)
        text = page.inner_text("body")
        assert "make serve" in text and "Failed to fetch" not in text
    finally:
        page.close()
