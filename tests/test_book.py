"""The book: it builds with every chapter executed and no warning, and the site works in a browser.

The build runs once per test session into a temporary folder; the browser is Debian's Chromium
driven by playwright, against the site served on 127.0.0.1, with every request elsewhere refused.
"""

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import chapter_notebooks  # noqa: E402
import export  # noqa: E402
from conftest import serving  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _chapter_pages() -> list[str]:
    """The pages of the book, in `_toc.yml` order, as paths without suffix ("book/data")."""
    return [path.relative_to(ROOT).with_suffix("").as_posix() for path in export.toc_chapters()]


PAGES = _chapter_pages()
# The chapters that are notebooks (code, outputs, a notebook to download); the others are plain pages.
CHAPTERS = [p for p in PAGES if chapter_notebooks.is_notebook((ROOT / f"{p}.md").read_text())]


@pytest.fixture(scope="session")
def site(tmp_path_factory, data_dir) -> Path:
    """Build the book (every chapter executed) and return the HTML folder."""
    out = tmp_path_factory.mktemp("book")
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", "--warningiserror",
               "--keep-going", "--path-output", str(out), str(ROOT)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    log = result.stdout + result.stderr
    (out / "build.log").write_text(log)
    if result.returncode != 0:
        pytest.fail(f"jupyter-book build failed (exit {result.returncode}):\n{log[-6000:]}")
    return out / "_build" / "html"


def test_build_has_no_warnings(site):
    log = (site.parent.parent / "build.log").read_text()
    warnings = [line for line in log.splitlines()
                if "WARNING" in line and "[IPKernelApp]" not in line]  # the kernel's own chatter
    assert warnings == []
    assert "build succeeded" in log


@pytest.mark.parametrize("page", CHAPTERS)
def test_every_chapter_is_a_page_with_executed_outputs(site, page):
    html = (site / f"{page}.html").read_text()
    assert "cell_output" in html, f"{page}: no executed output"
    assert "Traceback (most recent call last)" not in html
    if page != "book/intro":
        assert re.search(r'<img[^>]+src="[^"]+\.png"', html), f"{page}: no figure"


def test_teachers_page_gives_each_chapters_run_time_from_this_build(site):
    html = (site / "book" / "teachers.html").read_text()
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
    assert rows and "Run Time (s)" in rows[0]
    times = {}
    for row in rows[1:]:
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if cells and cells[0].startswith("book/"):
            assert cells[-1] == "✅", row
            times[cells[0]] = float(cells[-2])
    assert set(times) == set(CHAPTERS), times  # every chapter that runs code, and only those
    assert all(0 < t < 900 for t in times.values()), times  # minutes at most, each


def test_data_chapter_shows_its_figures_and_results(site):
    html = (site / "book" / "data.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
    assert len(images) >= 5  # digits, statistics, margins, pairs, closest call
    for name in ("fraction of pixels on", "digit_margin (nats)", "distinct MNIST test images matched",
                 "DataError: "):
        assert name in html, f"data chapter output lacks {name!r}"


def test_pages_show_the_shipped_laptop_models(site):
    import json

    intro = (site / "book" / "intro.html").read_text()
    assert "this book, laptop scale" in intro
    for model in ("baseline", "doubling", "nondoubling"):
        record = json.loads((ROOT / "results" / f"{model}-laptop.json").read_text())
        assert f"{record['log_likelihood']:.2f} ± {record['standard_error']:.2f}" in intro, model
    for page in ("doubling", "pool", "evaluate", "laptop", "experiments"):
        html = (site / "book" / f"{page}.html").read_text()
        assert "laptop" in html and "SMOKE-TRAINED" not in html, page
    experiments = (site / "book" / "experiments.html").read_text()
    assert "classified with p &gt;= 0.9" in experiments and "share of the damage" in experiments


def test_notebooks_are_published_without_outputs(site):
    for page in CHAPTERS:
        path = site / "notebooks" / f"{Path(page).name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, f"{path.name} has no code"
        assert all(c.outputs == [] and c.execution_count is None for c in code)
        assert "vnca-install" in code[0].metadata["tags"]  # the install cell comes first
        committed = ROOT / "notebooks" / path.name
        assert path.read_text() == committed.read_text(), f"{path.name}: the site's and the repository's differ"


def test_the_package_wheel_is_served_with_the_site(site):
    wheel = site / chapter_notebooks.WHEEL_FOLDER / chapter_notebooks.wheel_name()
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.testzip() is None
    manifest = json.loads((ROOT / "vnca" / "weights" / "manifest.json").read_text())
    assert {"vnca/cli.py", "vnca/weights/manifest.json"} <= names
    assert {f"vnca/weights/{entry['file']}" for entry in manifest["models"].values()} <= names
    assert not (ROOT / "build").exists()  # built from a copy: nothing left in the checkout


def test_mathjax_is_served_with_the_site(site):
    assert (site / "mathjax" / "tex-chtml.js").is_file()
    assert not (site / "_static" / "mathjax").exists()
    html = (site / "book" / "intro.html").read_text()
    assert "cdn.jsdelivr" not in html and "mathjax/tex-chtml.js" in html


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="session")
def server(site):
    with serving(site) as url:
        yield url


def _visit(browser, url):
    """Open `url`; return the page and what went wrong on the way."""
    page = browser.new_page()
    problems = {"outside": [], "console": [], "failed": []}

    def route(r):
        host = urllib.parse.urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            r.continue_()
        else:
            problems["outside"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: m.type == "error" and problems["console"].append(m.text))
    page.on("pageerror", lambda e: problems["console"].append(str(e)))
    page.on("response", lambda r: r.status >= 400 and problems["failed"].append(f"{r.status} {r.url}"))
    page.on("requestfailed", lambda r: r.url not in problems["outside"]
            and problems["failed"].append(f"{r.failure} {r.url}"))
    page.goto(url, wait_until="networkidle")
    return page, problems


@pytest.mark.parametrize("page_name", PAGES)
def test_page_in_a_browser(browser, server, page_name):
    page, problems = _visit(browser, f"{server}/{page_name}.html")
    # MathJax typesets every formula the page has.
    formulas = page.evaluate("() => document.querySelectorAll('span.math, div.math').length")
    if page_name in ("book/intro", "book/data", "book/vae"):
        assert formulas > 0, f"{page_name}: no math on the page"
    if formulas:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")
        math = page.evaluate("""() => [...document.querySelectorAll('span.math, div.math')]
            .map(el => el.querySelector('mjx-container') !== null)""")
        assert all(math), f"{page_name}: {math.count(False)} of {len(math)} formulas not typeset"
    # The code and what it prints fit the column of a 1,280-pixel-wide screen (less a 15-pixel
    # scrollbar): no sideways scrolling.
    page.set_viewport_size({"width": 1280 - 15, "height": 720})
    wide = page.evaluate("""() => [...document.querySelectorAll('div.cell pre')]
        .filter(p => p.scrollWidth > p.clientWidth + 1)
        .map(p => p.textContent.split('\\n').reduce((a, b) => a.length > b.length ? a : b))""")
    assert wide == [], f"{page_name}: code or output wider than the column: {wide}"
    # A live VNCA, where the page has one, has loaded its model and runs.
    demos = page.evaluate("() => document.querySelectorAll('.vnca-live').length")
    if page_name in ("book/intro", "book/pool", "book/live"):
        assert demos >= 1, f"{page_name}: no live VNCA"
    if demos:
        page.wait_for_function(f"() => document.querySelectorAll('.vnca-live-ready').length == {demos}",
                               timeout=30_000)
        assert page.evaluate("() => document.querySelectorAll('.vnca-live-error').length") == 0
        assert page.evaluate("() => document.querySelectorAll('.vnca-live canvas').length") >= demos
    # On a phone 390 pixels wide the page, its live VNCA drawn, does not scroll sideways (a code
    # block scrolls inside itself; a long path in the prose breaks).
    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"{page_name}: {width} pixels wide on a 390-pixel phone screen"
    # Every image has loaded and has a size.
    images = page.evaluate("""() => [...document.images].map(i => [i.src, i.complete && i.naturalWidth > 0])""")
    broken = [src for src, ok in images if not ok]
    assert not broken, f"{page_name}: images that did not load: {broken}"
    # No JavaScript error, no failed request, nothing asked of the outside world.
    assert problems["console"] == [], f"{page_name}: JavaScript errors: {problems['console']}"
    assert problems["failed"] == [], f"{page_name}: failed requests: {problems['failed']}"
    assert problems["outside"] == [], f"{page_name}: requests leaving localhost: {problems['outside']}"
    # Every chapter links to its notebook, and opens it in Colab and in Kaggle.
    if (ROOT / "notebooks" / f"{Path(page_name).name}.ipynb").exists():
        name = Path(page_name).name
        expected = chapter_notebooks.repository(ROOT).links(name)
        launch = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.vnca-launch a')]
            .map(a => [a.className, [a.href, a.textContent, a.getBoundingClientRect().width > 0]]))""")
        assert launch == {"vnca-download": [f"{server}/notebooks/{name}.ipynb", "Download notebook", True],
                          "vnca-colab": [expected["colab"], "Open in Colab", True],
                          "vnca-kaggle": [expected["kaggle"], "Open in Kaggle", True]}, launch
    # Every internal link resolves, anchors included.
    links = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    internal = {link for link in links if link.startswith(server)}
    assert internal, f"{page_name}: no internal links (no navigation?)"
    for link in sorted(internal):
        target, _, anchor = link.partition("#")
        with urllib.request.urlopen(target) as response:
            assert response.status == 200, link
            body = response.read().decode("utf-8", "replace")
        if anchor and target.endswith(".html"):
            anchor = urllib.parse.unquote(anchor)
            assert f'id="{anchor}"' in body, f"{page_name}: link {link} points at a missing anchor"
    page.close()


def test_index_redirects_to_the_introduction(browser, server):
    page, problems = _visit(browser, f"{server}/index.html")
    page.wait_for_url(re.compile(r"book/intro\.html"))
    assert "Variational Neural Cellular Automata" in page.title()
    assert problems["outside"] == [] and problems["console"] == []
    page.close()


def test_chapter_figures_are_visible(browser, server, tmp_path_factory):
    page, _ = _visit(browser, f"{server}/book/data.html")
    sizes = page.evaluate("""() => [...document.querySelectorAll('.cell_output img')]
        .map(i => [i.getBoundingClientRect().width, i.getBoundingClientRect().height])""")
    assert len(sizes) >= 5 and all(w > 100 and h > 30 for w, h in sizes), sizes
    shot = tmp_path_factory.mktemp("screens") / "data.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    page.close()
