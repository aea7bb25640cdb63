"""Every chapter as an output-free Jupyter notebook in `notebooks/`, to open in Kaggle, Colab or Jupyter.

    python tools/chapter_notebooks.py          # write notebooks/ from the chapters
    python tools/chapter_notebooks.py --check  # exit 1, naming the files, if notebooks/ is stale

Kaggle and Colab open notebooks from GitHub, so the notebooks are committed, like the package. Each
starts with a cell that installs `vnca` from the repository at the branch the notebook is opened
from (`repository.branch`), or at the release tag `repository.release` once one is named, so a
notebook always installs the code committed beside it, while keeping the platform's own
accelerator-enabled JAX (and libtpu, and the CUDA plugins) at the versions installed; if the install fails, the cell says what to do
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
# Install the vnca package from GitHub, as committed at {ref} beside this notebook. The platform's
# own JAX stays: Kaggle and Colab ship one built for their GPUs and TPUs (with libtpu or the CUDA
# plugins; Kaggle's TPU image has JAX but not Equinox), and pip is told to keep each of those at
# the version installed, choosing versions of vnca's other requirements that go with it.
import importlib.metadata
import importlib.util
import pathlib
import re
import subprocess
import sys
import tempfile

if importlib.util.find_spec("vnca") is None:
    keep = {{}}  # the accelerator's JAX, as installed: name -> version
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        if re.fullmatch(r"jax|jaxlib|libtpu.*|jax-cuda.*|jax-rocm.*", name):
            keep.setdefault(name, dist.version)
    constraints = pathlib.Path(tempfile.mkdtemp()) / "keep-jax.txt"
    constraints.write_text("".join(f"{{n}}=={{v}}\\n" for n, v in keep.items()))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                        "vnca @ git+{url}@{ref}", "--constraint",
                        str(constraints)], check=True)
    except subprocess.CalledProcessError:
        raise SystemExit(
            "Could not install vnca from {url} (see pip's message above). On Kaggle, "
            "switch the internet on (Settings > Internet on) and run this cell again. "
            "Elsewhere, check that this machine reaches github.com, or install vnca "
            "yourself (pip install git+{url}) and restart. Without GitHub: the book's "
            "site serves the package as a wheel, wheels/{wheel} beside its pages; "
            "upload it here and pip install it. If pip says the installed JAX is too old "
            "for vnca, keeping it (" + ", ".join(keep) + ") is what failed.") from None
    print("vnca installed; kept", ", ".join(f"{{n}} {{v}}" for n, v in keep.items()) or "nothing")'''
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


def package_version(root: Path = ROOT) -> str:
    """The package's version, `__version__` in vnca/__init__.py (the one place that says it), read
    from the file: importing vnca would start JAX."""
    text = (root / "vnca" / "__init__.py").read_text(encoding="utf-8")
    found = re.findall(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if len(found) != 1:
        raise ValueError("vnca/__init__.py must set __version__ once, as a plain string")
    return found[0]


def wheel_name(root: Path = ROOT) -> str:
    """The file name of the package's wheel, at the package's version."""
    return f"vnca-{package_version(root)}-py3-none-any.whl"


@dataclass(frozen=True)
class Repository:
    url: str  # https://github.com/<owner>/<repo>
    branch: str  # where the notebooks open from, and what the install cell pins until a release
    release: str = ""  # a release tag (v0.2.0) once one is pushed: the install cell pins it instead

    @property
    def install_ref(self) -> str:
        """What the notebooks' install cell installs: the release if one is named, else the branch."""
        return self.release or self.branch

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
    release = str(repo.get("release") or "")
    if release and release != f"v{package_version(root)}":
        raise ValueError(f"_config.yml: repository.release must be the tag of this version, "
                         f"v{package_version(root)}, or empty; got {release!r}")
    return Repository(url, str(repo.get("branch", "main")), release)


def is_notebook(text: str) -> bool:
    """A MyST notebook names its kernel in its front matter; a plain Markdown page does not."""
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


DROPDOWN = re.compile(r"^(?P<indent>[ ]*):::\{admonition\}[ ]*(?P<title>[^\n]*)\n(?P=indent):class: dropdown\n"
                      r"(?P<body>.*?)\n(?P=indent):::[ ]*$", re.MULTILINE | re.DOTALL)
CHAPTER_LINK = re.compile(r"\]\((?P<name>[\w-]+)\.md(?P<anchor>#[\w-]*)?\)")
# ```{literalinclude} path
# :option: value
# ```
INCLUDE = re.compile(r"^```\{literalinclude\}[ ]+(?P<path>\S+)\n(?P<options>(?::[\w-]+:.*\n)*)```[ ]*$", re.MULTILINE)
# The MyST directives the chapters' Markdown may use, each made plain for a notebook: solutions
# (dropdown admonitions) by `plain_markdown`, included files by `include`; code cells are cells.
DIRECTIVES = {"admonition", "literalinclude", "code-cell"}


def included(path: Path, options: dict[str, str]) -> tuple[str, str]:
    """(language, text) of a `{literalinclude}` as Sphinx renders it, for the options the chapters use:
    the lines after the first that contains `start-after`, up to the first after it that contains
    `end-before`."""
    unknown = set(options) - {"language", "start-after", "end-before"}
    if unknown:
        raise ValueError(f"{path}: literalinclude option(s) {sorted(unknown)} are not made plain for a notebook")
    lines = path.read_text(encoding="utf-8").splitlines()
    if "start-after" in options:
        starts = [i for i, line in enumerate(lines) if options["start-after"] in line]
        if not starts:
            raise ValueError(f"{path}: no line contains start-after {options['start-after']!r}")
        lines = lines[starts[0] + 1:]
    if "end-before" in options:
        ends = [i for i, line in enumerate(lines) if options["end-before"] in line]
        if not ends:
            raise ValueError(f"{path}: no line contains end-before {options['end-before']!r}")
        lines = lines[:ends[0]]
    return options.get("language", ""), "\n".join(lines)


def include(text: str, folder: Path) -> str:
    """Each `{literalinclude}` in `text` as a fenced block of the lines it shows: a notebook shows a
    directive as its raw text, not the file."""
    def block(m: re.Match) -> str:
        options = dict(re.match(r":([\w-]+):[ ]*(.*)", line).groups() for line in m["options"].splitlines())
        language, body = included(folder / m["path"], options)
        fence = "```" + "`" * max([len(f) - 2 for f in re.findall(r"`{3,}", body)] or [0])
        return f"{fence}{language}\n{body}\n{fence}"
    return INCLUDE.sub(block, text)


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
            cell.source = include(plain_markdown(cell.source, repo, notebooks), path.parent)
            attach_figures(cell, path.parent)
    install = nbformat.v4.new_code_cell(INSTALL.format(url=repo.url, ref=repo.install_ref, wheel=wheel_name()),
                                        metadata={"tags": [INSTALL_TAG, "remove-cell"]})
    nb.cells.insert(0, install)
    if READS_CHECKOUT.search(path.read_text(encoding="utf-8")):
        checkout = nbformat.v4.new_code_cell(CHECKOUT.format(url=repo.url, ref=repo.install_ref),
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
