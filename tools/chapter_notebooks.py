"""Every chapter as an output-free Jupyter notebook in `notebooks/`, to open in Kaggle, Colab or Jupyter.

    python tools/chapter_notebooks.py          # write notebooks/ from the chapters
    python tools/chapter_notebooks.py --check  # exit 1, naming the files, if notebooks/ is stale

Kaggle and Colab open notebooks from GitHub, so the notebooks are committed, like the package. Each
starts with a cell that installs `vnca` from the repository at the tag of this version (`v` + the
version in pyproject.toml) while keeping the platform's own accelerator-enabled JAX. The chapters do
not contain that cell, so the book build never runs or shows it; it carries the tag `vnca-install`.
The repository is the one setting `repository.url` (and `repository.branch`) in `_config.yml`.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
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
INSTALL = '''\
# Install the vnca package, version {tag}, from GitHub. This keeps the platform's own JAX: Kaggle
# and Colab ship one built for their GPUs and TPUs, and pinning its version stops pip replacing it.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("vnca") is None:
    import jax

    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "vnca @ git+{url}@{tag}", f"jax=={{jax.__version__}}"], check=True)'''


@dataclass(frozen=True)
class Repository:
    url: str  # https://github.com/<owner>/<repo>
    branch: str
    tag: str  # what the install cell pins

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
    version = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    return Repository(url, str(repo.get("branch", "main")), f"v{version}")


def is_notebook(text: str) -> bool:
    """A MyST notebook names its kernel in its front matter; a plain Markdown page does not."""
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


def notebook(path: Path, repo: Repository) -> nbformat.NotebookNode:
    """The chapter at `path` as an output-free notebook that starts with the install cell."""
    nb = jupytext.reads(path.read_text(encoding="utf-8"), fmt="md:myst")
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    install = nbformat.v4.new_code_cell(INSTALL.format(url=repo.url, tag=repo.tag),
                                        metadata={"tags": [INSTALL_TAG, "remove-cell"]})
    nb.cells.insert(0, install)
    for i, cell in enumerate(nb.cells):  # ids that do not change from one run to the next
        cell["id"] = f"cell-{i}"
    nb.metadata.pop("jupytext", None)
    nbformat.validate(nb)
    return nb


def render(root: Path = ROOT) -> dict[Path, str]:
    """The text of every chapter's notebook, keyed by its path relative to the root."""
    repo = repository(root)
    out = {}
    for path in toc_chapters(root):
        if is_notebook(path.read_text(encoding="utf-8")):
            out[Path(FOLDER) / f"{path.stem}.ipynb"] = nbformat.writes(notebook(path, repo)) + "\n"
    return out


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
