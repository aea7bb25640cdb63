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
    assert f"vnca @ git+{repo.url}@{repo.install_ref}" in install.source  # the code beside the notebook
    assert "Internet on" in install.source and "SystemExit" in install.source  # a failure says what to do
    assert f"wheels/{chapter_notebooks.wheel_name()}" in install.source  # and names the offline route
    assert "--constraint" in install.source  # the platform's JAX stays (tested below with a fake one)
    compile(install.source, path.name, "exec")
    assert sum("vnca-install" in c.metadata.get("tags", []) for c in nb.cells) == 1
    chapter = (ROOT / "book" / f"{path.stem}.md").read_text()
    assert "vnca-install" not in chapter  # the book build never sees the install cell


def test_only_the_chapters_that_read_the_repository_clone_it():
    cloning = {p.stem for p in NOTEBOOKS
               if any(chapter_notebooks.CHECKOUT_TAG in c.metadata.get("tags", [])
                      for c in nbformat.read(p, as_version=4).cells)}
    assert cloning == {"laptop", "experiments"}  # the two that read results/laptop/
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


def test_every_directive_the_chapters_use_is_made_plain():
    """A MyST directive that the notebooks do not convert shows in Jupyter, Colab and Kaggle as its
    raw text: a new one must be taught to `chapter_notebooks` before a chapter uses it."""
    import re

    used = set()
    for chapter in export.toc_chapters(ROOT):
        text = chapter.read_text()
        if chapter_notebooks.is_notebook(text):
            used |= set(re.findall(r"^\s*(?:```|:::)\{([\w-]+)\}", text, re.MULTILINE))
    assert used <= chapter_notebooks.DIRECTIVES, f"not made plain for notebooks: {used - chapter_notebooks.DIRECTIVES}"
    for path in NOTEBOOKS:
        markdown = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        assert not re.search(r"(```|:::)\{", markdown), f"{path.name}: a raw directive"


def test_an_included_file_is_shown_in_the_notebook():
    """The live chapter shows its script's decoder with `{literalinclude}`; its notebook shows the same
    lines, as a JavaScript block."""
    script = (ROOT / "_static" / "vnca-live.js").read_text().splitlines()
    start = next(i for i, line in enumerate(script) if "// ---- the decoder" in line)
    end = next(i for i, line in enumerate(script) if "// ---- end of the decoder" in line)
    decoder = "\n".join(script[start + 1:end])
    assert len(decoder) > 1000 and "class Decoder" in decoder
    markdown = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / "live.ipynb", as_version=4).cells
                         if c.cell_type == "markdown")
    assert f"```javascript\n{decoder}\n```" in markdown


def test_an_include_the_notebooks_cannot_show_fails_loudly(tmp_path):
    (tmp_path / "a.js").write_text("one\n// start\ntwo\n// end\nthree\n")
    text = "```{literalinclude} a.js\n:start-after: // start\n:end-before: // end\n```"
    assert chapter_notebooks.include(text, tmp_path) == "```\ntwo\n```"
    with pytest.raises(ValueError, match="no line contains end-before"):
        chapter_notebooks.include(text.replace("// end", "// gone"), tmp_path)
    with pytest.raises(ValueError, match=r"\['lines'\] are not made plain"):
        chapter_notebooks.include(text.replace(":start-after: // start", ":lines: 2"), tmp_path)


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


def _fake_site(folder: Path, installed: dict[str, str], pip_exit: int = 0) -> Path:
    """A folder that stands for a platform's Python: the distributions `installed` (name: version,
    metadata only) and a `pip` that records how it was called instead of installing anything."""
    folder.mkdir()
    for name, version in installed.items():
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (folder / "pip").mkdir()
    (folder / "pip" / "__init__.py").write_text("")
    (folder / "pip" / "__main__.py").write_text(
        "import json, pathlib, sys\n"
        "args = sys.argv[1:]\n"
        "constraints = pathlib.Path(args[args.index('--constraint') + 1]).read_text()\n"
        f"pathlib.Path({str(folder / 'pip-call.json')!r}).write_text(json.dumps([args, constraints]))\n"
        f"sys.exit({pip_exit})\n")
    return folder


def _run_install_cell(tmp_path: Path, installed: dict[str, str], pip_exit: int = 0, release: str = ""):
    """The install cell, run as a notebook would run it, in a Python that sees only `_fake_site`:
    `-S` leaves out this environment's site-packages (its vnca, its JAX), PYTHONPATH puts the fake
    distributions and the fake pip first (the `pip` the cell starts sees them too)."""
    import json
    import os

    tmp_path.mkdir(exist_ok=True)
    site = _fake_site(tmp_path / "site", installed, pip_exit)
    repo = chapter_notebooks.Repository("https://github.com/someone/vnca", "main", release)
    cell = chapter_notebooks.INSTALL.format(url=repo.url, ref=repo.install_ref, wheel="vnca-9.9.9-py3-none-any.whl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([sys.executable, "-S", "-c", cell], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(site)}, timeout=120)
    call = site / "pip-call.json"
    return done, (json.loads(call.read_text()) if call.exists() else None)


def test_the_install_cell_keeps_a_kaggle_tpu_images_jax_and_libtpu(tmp_path):
    """Kaggle's TPU image: JAX, jaxlib and libtpu installed (here at versions no registry has), no
    Equinox, no vnca. The cell installs vnca and constrains pip to the installed JAX stack, so pip
    picks versions of the rest that go with it instead of replacing it."""
    installed = {"jax": "0.4.99", "jaxlib": "0.4.99", "libtpu": "0.0.99", "numpy": "2.0.2", "ml_dtypes": "0.5.0"}
    done, (args, constraints) = _run_install_cell(tmp_path, installed)
    assert done.returncode == 0, done.stderr
    assert args[:2] == ["install", "--quiet"] and "vnca @ git+https://github.com/someone/vnca@main" in args
    assert not {"-U", "--upgrade", "--force-reinstall", "--no-deps", "--ignore-installed"} & set(args)
    assert not [a for a in args if a.startswith(("jax", "libtpu"))]  # nothing of JAX's is asked for
    assert sorted(constraints.splitlines()) == ["jax==0.4.99", "jaxlib==0.4.99", "libtpu==0.0.99"]
    assert "kept jax 0.4.99, jaxlib 0.4.99, libtpu 0.0.99" in done.stdout


def test_the_install_cell_keeps_a_gpu_images_cuda_plugins_and_pins_nothing_where_there_is_no_jax(tmp_path):
    installed = {"jax": "0.5.1", "jaxlib": "0.5.1", "jax-cuda12-plugin": "0.5.1", "jax_cuda12_pjrt": "0.5.1"}
    done, (_, constraints) = _run_install_cell(tmp_path / "colab", installed)
    assert done.returncode == 0, done.stderr
    assert sorted(constraints.splitlines()) == ["jax-cuda12-pjrt==0.5.1", "jax-cuda12-plugin==0.5.1",
                                                "jax==0.5.1", "jaxlib==0.5.1"]
    done, (args, constraints) = _run_install_cell(tmp_path / "bare", {"numpy": "2.0.2"})
    assert done.returncode == 0 and constraints == "" and "kept nothing" in done.stdout, done.stderr


def test_the_install_cell_says_what_to_do_when_pip_fails_and_installs_a_named_release(tmp_path):
    done, call = _run_install_cell(tmp_path / "fails", {"jax": "0.4.99"}, pip_exit=1)
    assert done.returncode == 1 and call is not None
    assert "Internet on" in done.stderr and "keeping it (jax)" in done.stderr and "Traceback" not in done.stderr
    done, (args, _) = _run_install_cell(tmp_path / "release", {}, release="v0.2.0")
    assert done.returncode == 0 and "vnca @ git+https://github.com/someone/vnca@v0.2.0" in args


def test_a_release_named_in_the_configuration_is_this_versions_tag(tmp_path):
    for name in ("_config.yml", "vnca/__init__.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    assert chapter_notebooks.repository(tmp_path).install_ref == "main"  # no release yet: the branch
    config = tmp_path / "_config.yml"
    text = config.read_text()
    assert '  release: ""\n' in text
    version = chapter_notebooks.package_version(ROOT)
    config.write_text(text.replace('  release: ""\n', f"  release: v{version}\n"))
    assert chapter_notebooks.repository(tmp_path).install_ref == f"v{version}"
    config.write_text(text.replace('  release: ""\n', "  release: v0.0.1\n"))
    with pytest.raises(ValueError, match="repository.release must be the tag of this version"):
        chapter_notebooks.repository(tmp_path)
