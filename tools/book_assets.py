"""Sphinx extension: what the site serves beside the pages.

- MathJax 3, copied from node_modules (installed by `npm ci`), to `mathjax/` in the site, so math is
  typeset with no network. It goes beside `_static/`, not inside the book's own `_static/`, because
  jupyter-book adds every script found there to every page.
- Each chapter as an output-free Jupyter notebook, `notebooks/<chapter>.ipynb`, made with jupytext
  from the MyST Markdown source, to open in Jupyter, Kaggle or Colab.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
MATHJAX = ROOT / "node_modules" / "mathjax" / "es5"


class AssetError(RuntimeError):
    pass


def _is_notebook(text: str) -> bool:
    """A MyST notebook names its kernel in its front matter; a plain Markdown page does not."""
    if not text.startswith("---"):
        return False
    return "kernelspec:" in text.split("---", 2)[1]


def chapter_notebooks(srcdir: Path, docnames) -> dict[str, nbformat.NotebookNode]:
    """The output-free notebook of every MyST notebook page, keyed by its page name."""
    notebooks = {}
    for docname in sorted(docnames):
        path = srcdir / f"{docname}.md"
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if not _is_notebook(text):
            continue
        nb = jupytext.reads(text, fmt="md:myst")
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nbformat.validate(nb)
        notebooks[docname] = nb
    return notebooks


def _write_assets(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    if not (MATHJAX / "tex-chtml.js").is_file():
        raise AssetError(
            f"MathJax not found at {MATHJAX}: run `npm ci` in {ROOT} first (the README's setup does)."
        )
    shutil.copytree(MATHJAX, outdir / "mathjax", dirs_exist_ok=True)
    for docname, nb in chapter_notebooks(Path(app.srcdir), app.env.found_docs).items():
        target = outdir / "notebooks" / f"{Path(docname).name}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)


def setup(app):
    app.connect("build-finished", _write_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
