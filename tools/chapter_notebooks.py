"""Every chapter as an output-free Jupyter notebook in `notebooks/`, to open in Kaggle, Colab or Jupyter.

    python tools/chapter_notebooks.py          # write notebooks/ from the chapters
    python tools/chapter_notebooks.py --check  # exit 1, naming the files, if notebooks/ is stale

Kaggle and Colab open notebooks from GitHub, so the notebooks are committed, like the package. Each
starts with a cell that installs `vnca` from the repository at the branch the notebook is opened
from (`repository.branch`), so a notebook always installs the code committed beside it, while
keeping the platform's own accelerator-enabled JAX; if the install fails, the cell says what to do
(Kaggle needs "Internet on"). The chapters do not contain that cell, so the book build never runs or
shows it; it carries the tag `vnca-install`. The repository is the one setting `repository.url`
(and `repository.branch`) in `_config.yml`.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jupytext
import nbformat
import yaml

from export import toc_chapters

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "notebooks"
INSTALL_TAG = "vnca-install"
CHECKOUT_TAG = "vnca-checkout"
INSTALL = '''\
# Install the vnca package from GitHub, as committed on the branch {ref} beside this notebook. This
# keeps the platform's own JAX: Kaggle and Colab ship one built for their GPUs and TPUs, and
# pinning its version stops pip replacing it.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("vnca") is None:
    import jax

    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "vnca @ git+{url}@{ref}", f"jax=={{jax.__version__}}"], check=True)
    except subprocess.CalledProcessError:
        raise SystemExit(
            "Could not install vnca from {url} (see pip's message above). On Kaggle, "
            "switch the internet on (Settings > Internet on) and run this cell again. "
            "Elsewhere, check that this machine reaches github.com, or install vnca "
            "yourself (pip install git+{url}) and restart. Without GitHub: the book's "
            "site serves the package as a wheel, wheels/{wheel} beside its pages; "
            "upload it here and pip install it.") from None'''
CHECKOUT = '''\
# This chapter reads the records committed in the book's repository (training curves, benchmark
# results). Outside a checkout, this cell fetches them, with a shallow clone of the branch beside
# this notebook, and runs the chapter from the clone's book/ folder.
import os
import pathlib
import subprocess

if not pathlib.Path("../results/laptop").is_dir():
    clone = pathlib.Path("vnca-book").resolve()
    if not clone.is_dir():
        try:
            subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "{ref}",
                            "{url}", str(clone)], check=True)
        except (OSError, subprocess.CalledProcessError):
            raise SystemExit(
                "Could not clone {url}: this chapter needs the records committed there. "
                "Check that this machine reaches github.com (on Kaggle: Settings > Internet "
                "on), or clone it yourself and open this notebook from its book/ folder.") from None
    os.chdir(clone / "book")'''
# chapters whose code reads files of the repository, so their notebooks start with CHECKOUT
READS_CHECKOUT = re.compile(r"\.\./(results/laptop|benchmarks)")
WHEEL_FOLDER = "wheels"  # in the site, beside the pages (tools/book_assets.py writes it)


def wheel_name(root: Path = ROOT) -> str:
    """The file name of the package's wheel, at the version in pyproject.toml."""
    import tomllib

    version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return f"vnca-{version}-py3-none-any.whl"


@dataclass(frozen=True)
class Repository:
    url: str  # https://github.com/<owner>/<repo>
    branch: str  # what the install cell pins: the code committed beside the notebook

    @property
    def owner_repo(self) -> str:
        return re.sub(r"^https://github\.com/", "", self.url).strip("/")

    def links(self, name: str) -> dict[str, str]:
        """Where the notebook of chapter `name` opens: on GitHub, in Colab and in Kaggle."""
        github = f"{self.url}/blob/{self.branch}/{FOLDER}/{name}.ipynb"
        return {"github": github,
                "colab": f"https://colab.research.google.com/github/{self.owner_repo}/blob/{self.branch}/"
                         f"{FOLDER}/{name}.ipynb",
                "kaggle": f"https://kaggle.com/kernels/welcome?src={quote(github, safe=':/')}"}


def repository(root: Path = ROOT) -> Repository:
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"_config.yml: repository.url must be https://github.com/<owner>/<repo>, got {url!r}")
    return Repository(url, str(repo.get("branch", "main")))


def is_notebook(text: str) -> bool:
    """A MyST notebook names its kernel in its front matter; a plain Markdown page does not."""
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


DROPDOWN = re.compile(r"^(?P<indent>[ ]*):::\{admonition\}[ ]*(?P<title>[^\n]*)\n(?P=indent):class: dropdown\n"
                      r"(?P<body>.*?)\n(?P=indent):::[ ]*$", re.MULTILINE | re.DOTALL)
CHAPTER_LINK = re.compile(r"\]\((?P<name>[\w-]+)\.md(?P<anchor>#[\w-]*)?\)")


def plain_markdown(text: str, repo: Repository, notebooks: set[str]) -> str:
    """A chapter's Markdown as Jupyter, Colab and Kaggle render it: the MyST dropdowns (the
    exercises' solutions) become closed HTML `<details>` blocks, and links to other chapters point
    at their notebooks (or, for pages without one, their source) on GitHub, which resolve from any
    of those places."""
    def details(m: re.Match) -> str:
        indent = m["indent"]
        return (f"{indent}<details><summary>{m['title'] or 'Solution'}</summary>\n\n{m['body']}\n\n"
                f"{indent}</details>")

    def link(m: re.Match) -> str:
        name = m["name"]
        target = (f"{FOLDER}/{name}.ipynb" if name in notebooks else f"book/{name}.md")
        return f"]({repo.url}/blob/{repo.branch}/{target}{m['anchor'] or ''})"

    return CHAPTER_LINK.sub(link, DROPDOWN.sub(details, text))


FIGURE = re.compile(r"!\[(?P<alt>[^\]]*)\]\(figures/(?P<name>[\w.-]+\.svg)\)")


def attach_figures(cell, folder: Path) -> None:
    """A chapter's diagrams (book/figures/*.svg) travel inside its notebook, as attachments of the
    Markdown cell that shows them: a notebook opened alone has no figures folder beside it."""
    for m in FIGURE.finditer(cell.source):
        svg = (folder / "figures" / m["name"]).read_bytes()
        cell.setdefault("attachments", {})[m["name"]] = {"image/svg+xml": base64.b64encode(svg).decode()}
    cell.source = FIGURE.sub(lambda m: f"![{m['alt']}](attachment:{m['name']})", cell.source)


def notebook(path: Path, repo: Repository, notebooks: set[str]) -> nbformat.NotebookNode:
    """The chapter at `path` as an output-free notebook that starts with the install cell."""
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="md:myst")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = plain_markdown(cell.source, repo, notebooks)
            attach_figures(cell, path.parent)
    install = nbformat.v4.new_code_cell(INSTALL.format(url=repo.url, ref=repo.branch, wheel=wheel_name()),
                                        metadata={"tags": [INSTALL_TAG, "remove-cell"]})
    nb.cells.insert(0, install)
    if READS_CHECKOUT.search(path.read_text(encoding="utf-8")):
        checkout = nbformat.v4.new_code_cell(CHECKOUT.format(url=repo.url, ref=repo.branch),
                                             metadata={"tags": [CHECKOUT_TAG, "remove-cell"]})
        nb.cells.insert(1, checkout)
    for i, cell in enumerate(nb.cells):  # ids that do not change from one run to the next
        cell["id"] = f"cell-{i}"
    nb.metadata.pop("jupytext", None)
    nbformat.validate(nb)
    return nb


def render(root: Path = ROOT) -> dict[Path, str]:
    """The text of every chapter's notebook, keyed by its path relative to the root."""
    repo = repository(root)
    chapters = [p for p in toc_chapters(root) if is_notebook(p.read_text(encoding="utf-8"))]
    names = {p.stem for p in chapters}
    return {Path(FOLDER) / f"{p.stem}.ipynb": nbformat.writes(notebook(p, repo, names)) + "\n"
            for p in chapters}


def check(root: Path = ROOT) -> tuple[list[Path], list[Path]]:
    """(stale, orphaned) notebooks."""
    expected = render(root)
    stale = [p for p, text in expected.items()
             if not (root / p).is_file() or (root / p).read_text(encoding="utf-8") != text]
    orphaned = [p.relative_to(root) for p in sorted((root / FOLDER).glob("*.ipynb"))
                if p.relative_to(root) not in expected]
    return sorted(stale), orphaned


def write(root: Path = ROOT) -> list[Path]:
    changed = []
    expected = render(root)
    for rel, text in expected.items():
        path = root / rel
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(rel)
    for path in sorted((root / FOLDER).glob("*.ipynb")):
        if path.relative_to(root) not in expected:
            path.unlink()
            changed.append(path.relative_to(root))
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if notebooks/ is stale")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    if args.check:
        stale, orphaned = check(args.root)
        for p in stale:
            print(f"stale: {p} differs from its chapter", file=sys.stderr)
        for p in orphaned:
            print(f"orphaned: {p} has no chapter", file=sys.stderr)
        if stale or orphaned:
            print("run `python tools/chapter_notebooks.py` and commit the result", file=sys.stderr)
            return 1
        print("notebooks/ matches the chapters")
        return 0
    for p in write(args.root):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
