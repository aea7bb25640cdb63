"""Sphinx extension: what the site serves beside the pages.

- MathJax 3, copied from node_modules (installed by `npm ci`), to `mathjax/` in the site, so math is
  typeset with no network. It goes beside `_static/`, not inside the book's own `_static/`, because
  jupyter-book adds every script found there to every page.
- Each chapter as an output-free Jupyter notebook, `notebooks/<chapter>.ipynb` (the same notebooks
  that `tools/chapter_notebooks.py` commits), and, at the top of each chapter page, links to download
  it and to open it in Colab and in Kaggle.
- The package as a wheel, `wheels/vnca-<version>-py3-none-any.whl`, built from this checkout: the
  install route for a machine that cannot reach GitHub (the notebooks' install cell names it).
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from chapter_notebooks import WHEEL_FOLDER, is_notebook, notebook, repository, wheel_name

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = ROOT / "node_modules" / "mathjax" / "es5"


class AssetError(RuntimeError):
    pass


def _chapters(app) -> dict[str, Path]:
    """Page name -> source file, for every page that is a MyST notebook."""
    srcdir = Path(app.srcdir)
    found = {}
    for docname in sorted(app.env.found_docs):
        path = srcdir / f"{docname}.md"
        if path.is_file() and is_notebook(path.read_text(encoding="utf-8")):
            found[docname] = path
    return found


def _launch_links(app, pagename, templatename, context, doctree) -> None:
    if doctree is None or "body" not in context or pagename not in _chapters(app):
        return
    name = Path(pagename).name
    links = repository(ROOT).links(name)
    depth = pagename.count("/")
    download = "../" * depth + f"notebooks/{name}.ipynb"
    bar = (
        '<div class="vnca-launch" role="navigation" aria-label="run this chapter">'
        f'<a class="vnca-download" href="{html.escape(download)}" download>Download notebook</a>'
        f'<a class="vnca-colab" href="{html.escape(links["colab"])}">Open in Colab</a>'
        f'<a class="vnca-kaggle" href="{html.escape(links["kaggle"])}">Open in Kaggle</a>'
        "</div>"
    )
    context["body"] = bar + context["body"]


def _write_assets(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    if not (MATHJAX / "tex-chtml.js").is_file():
        raise AssetError(
            f"MathJax not found at {MATHJAX}: run `npm ci` in {ROOT} first (the README's setup does)."
        )
    shutil.copytree(MATHJAX, outdir / "mathjax", dirs_exist_ok=True)
    repo = repository(ROOT)
    chapters = _chapters(app)
    names = {Path(docname).name for docname in chapters}  # links between notebooks point at these
    for docname, path in chapters.items():
        target = outdir / "notebooks" / f"{Path(docname).name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook(path, repo, names), target)
    build_wheel(outdir / WHEEL_FOLDER)


PACKAGE_SOURCES = ("vnca", "pyproject.toml", "README.md", "LICENSE")  # what the sdist is made of


def build_package(outdir: Path, root: Path = ROOT, sdist: bool = True) -> list[Path]:
    """Build the package with `python -m build` into `outdir`, from a copy of what it is made of (so
    that the build leaves nothing in the checkout), with the setuptools already installed: no
    network. With `sdist`, the sdist first and the wheel from it (so a file the sdist lacks fails
    the wheel), as a release is built; else the wheel alone. Returns the files, the wheel last."""
    with tempfile.TemporaryDirectory(prefix="vnca-wheel-") as tmp:
        source = Path(tmp) / "source"
        for name in PACKAGE_SOURCES:
            if (root / name).is_dir():
                shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(root / name, source / name)
        dist = Path(tmp) / "dist"
        result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", *([] if sdist else ["--wheel"]),
                                 "--outdir", str(dist), str(source)], capture_output=True, text=True)
        if result.returncode:
            raise AssetError(f"building the package failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
        wheel = dist / wheel_name(root)
        if not wheel.is_file():
            raise AssetError(f"python -m build did not make {wheel.name}: {sorted(p.name for p in dist.iterdir())}")
        outdir.mkdir(parents=True, exist_ok=True)
        built = [*sorted(p for p in dist.iterdir() if p != wheel), wheel]
        for path in built:
            shutil.copy2(path, outdir / path.name)
    return [outdir / path.name for path in built]


def build_wheel(outdir: Path, root: Path = ROOT) -> Path:
    """The package's wheel alone, built as `build_package` builds it (the one the site serves)."""
    return build_package(outdir, root, sdist=False)[-1]


def setup(app):
    app.connect("html-page-context", _launch_links)
    app.connect("build-finished", _write_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
