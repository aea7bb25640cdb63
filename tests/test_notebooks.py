"""The committed chapter notebooks: in sync with the chapters, valid, output-free, install cell first."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import chapter_notebooks  # noqa: E402
import export  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_match_the_chapters():
    stale, orphaned = chapter_notebooks.check(ROOT)
    assert not stale and not orphaned, f"run `python tools/chapter_notebooks.py`: stale {stale}, orphaned {orphaned}"
    chapters = {p.stem for p in export.toc_chapters(ROOT) if chapter_notebooks.is_notebook(p.read_text())}
    assert "teachers" not in chapters and "train" in chapters
    assert {p.stem for p in NOTEBOOKS} == chapters


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_valid_output_free_and_installs_first(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    install = nb.cells[0]
    assert install.cell_type == "code" and set(install.metadata["tags"]) == {"vnca-install", "remove-cell"}
    repo = chapter_notebooks.repository(ROOT)
    assert f"vnca @ git+{repo.url}@{repo.branch}" in install.source  # the code beside the notebook
    assert "Internet on" in install.source and "SystemExit" in install.source  # a failure says what to do
    assert f"wheels/{chapter_notebooks.wheel_name()}" in install.source  # and names the offline route
    assert 'f"jax=={jax.__version__}"' in install.source  # the platform's JAX stays
    compile(install.source, path.name, "exec")
    assert sum("vnca-install" in c.metadata.get("tags", []) for c in nb.cells) == 1
    chapter = (ROOT / "book" / f"{path.stem}.md").read_text()
    assert "vnca-install" not in chapter  # the book build never sees the install cell


def test_only_the_chapters_that_read_the_repository_clone_it():
    cloning = {p.stem for p in NOTEBOOKS
               if any(chapter_notebooks.CHECKOUT_TAG in c.metadata.get("tags", [])
                      for c in nbformat.read(p, as_version=4).cells)}
    assert cloning == {"laptop"}
    nb = nbformat.read(ROOT / "notebooks" / "laptop.ipynb", as_version=4)
    assert chapter_notebooks.CHECKOUT_TAG in nb.cells[1].metadata["tags"]


def _run_checkout_cell(work: Path, url: str) -> subprocess.CompletedProcess:
    code = chapter_notebooks.CHECKOUT.format(url=url, ref="main")
    code += "\nprint(pathlib.Path.cwd())"
    return subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True,
                          timeout=120)


def test_the_checkout_cell_clones_the_branch_and_moves_into_its_book_folder(tmp_path):
    remote = tmp_path / "remote"
    (remote / "results" / "laptop").mkdir(parents=True)
    (remote / "book").mkdir()
    (remote / "results" / "laptop" / "x.json").write_text("{}")
    (remote / "book" / "laptop.md").write_text("# chapter")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(remote)]
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run(git + args, check=True)
    work = tmp_path / "work"
    work.mkdir()
    done = _run_checkout_cell(work, remote.as_uri())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(work / "vnca-book" / "book")
    assert (work / "vnca-book" / "results" / "laptop" / "x.json").exists()
    again = _run_checkout_cell(work, remote.as_uri())  # a second run reuses the clone
    assert again.returncode == 0 and again.stdout.strip() == str(work / "vnca-book" / "book")


def test_the_checkout_cell_says_what_to_do_when_it_cannot_clone(tmp_path):
    done = _run_checkout_cell(tmp_path, (tmp_path / "no-such-repository").as_uri())
    assert done.returncode == 1
    assert "Could not clone" in done.stderr and "Internet" in done.stderr
    assert "Traceback" not in done.stderr


def test_links_are_built_from_the_one_repository_setting(tmp_path):
    links = chapter_notebooks.Repository("https://github.com/someone/vnca", "main").links("pool")
    assert links == {
        "github": "https://github.com/someone/vnca/blob/main/notebooks/pool.ipynb",
        "colab": "https://colab.research.google.com/github/someone/vnca/blob/main/notebooks/pool.ipynb",
        "kaggle": "https://kaggle.com/kernels/welcome?src=https://github.com/someone/vnca/blob/main/notebooks/pool.ipynb",
    }
    for name in ("_config.yml", "_toc.yml", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    config = tmp_path / "_config.yml"
    config.write_text(config.read_text().replace("https://github.com/vnca-book/vnca", "https://gitlab.com/x/y"))
    with pytest.raises(ValueError, match="repository.url must be https://github.com/<owner>/<repo>"):
        chapter_notebooks.repository(tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_markdown_has_no_myst_and_hides_solutions(path):
    """Jupyter, Colab and Kaggle show MyST directives as text: a solution would sit, readable,
    right under its question. The notebooks use closed HTML <details> blocks instead, and their
    links to other chapters point at GitHub, not at a .md file beside them."""
    import re

    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert ":::" not in markdown and "{admonition}" not in markdown and ":class:" not in markdown
    assert markdown.count("<details>") == markdown.count("</details>")
    chapter = (ROOT / "book" / f"{path.stem}.md").read_text()
    assert markdown.count("<details><summary>Solution</summary>") == chapter.count(":::{admonition} Solution")
    assert not re.search(r"\]\([\w-]+\.md", markdown), "a relative link to a chapter's source"
    repo = chapter_notebooks.repository(ROOT)
    for target in re.findall(rf"\]\({re.escape(repo.url)}/blob/{repo.branch}/([^)#]+)", markdown):
        assert (ROOT / target).is_file(), target  # every link names a file that exists


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_diagrams_travel_inside_the_notebook(path):
    import base64
    import re

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        assert "](figures/" not in cell.source  # nothing points at a folder the notebook lacks
        for name in re.findall(r"\]\(attachment:([\w.-]+)\)", cell.source):
            svg = base64.b64decode(cell.attachments[name]["image/svg+xml"])
            assert svg == (ROOT / "book" / "figures" / name).read_bytes()
    if path.stem in ("intro", "nca", "doubling"):
        assert any(c.get("attachments") for c in nb.cells), "its diagram is missing"
