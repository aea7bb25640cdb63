"""The exporter: vnca/ is exactly what the chapters export, and the exporter catches drift."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import export  # noqa: E402
import format_chapters  # noqa: E402

ROOT = export.ROOT


def test_package_matches_the_chapters():
    stale, orphaned = export.check()
    assert not stale, f"stale generated files (run `python tools/export.py`): {stale}"
    assert not orphaned, f"generated files that no chapter exports any more: {orphaned}"


def test_chapter_code_fits_the_page_column():
    too_long = format_chapters.long_lines()
    assert not too_long, (
        f"code lines wider than {format_chapters.WIDTH} characters (run "
        "`python tools/format_chapters.py`):\n" + "\n".join(too_long))


def test_the_column_check_finds_a_long_line(tmp_path):
    (tmp_path / "book").mkdir()
    cell = "```{code-cell} ipython3\n#| export vnca.x\nx = 1\n" + "y" * 80 + " = 2\n```\n"
    (tmp_path / "book" / "c.md").write_text("# A chapter\n\n" + cell, encoding="utf-8")
    assert format_chapters.long_lines(tmp_path) == [f"book/c.md:6: {'y' * 60}"]


def test_every_module_of_the_package_is_generated_except_the_init():
    generated = set(export.generated_files())
    for path in (ROOT / "vnca").rglob("*.py"):
        rel = path.relative_to(ROOT)
        assert rel in generated or path.name == "__init__.py", f"{rel} is hand-written"


def test_generated_files_name_their_chapters_in_toc_order():
    chapters = [p.relative_to(ROOT).as_posix() for p in export.toc_chapters()]
    for rel, text in export.render().items():
        assert text.startswith(export.GENERATED)
        named = [line.split(", code cell")[0].removeprefix("# ---- ")
                 for line in text.splitlines() if line.startswith("# ---- ")]
        assert named and all(name in chapters for name in named)
        assert named == sorted(named, key=chapters.index), f"{rel}: blocks out of chapter order"


@pytest.fixture
def book(tmp_path):
    """A copy of the repository's chapters and package to break."""
    for name in ("_toc.yml", "book", "vnca"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    return tmp_path


def test_edited_chapter_makes_its_module_stale(book):
    chapter = book / "book" / "data.md"
    chapter.write_text(chapter.read_text().replace("LINE = 2 * PIXELS", "LINE = 2 * PIXELS + 0"))
    stale, orphaned = export.check(book)
    assert stale == [Path("vnca/data.py")] and orphaned == []
    export.write(book)
    assert export.check(book) == ([], [])
    assert "LINE = 2 * PIXELS + 0" in (book / "vnca" / "data.py").read_text()


def test_hand_edited_module_is_stale(book):
    module = book / "vnca" / "profile.py"
    module.write_text(module.read_text() + "\nHACK = 1\n")
    assert export.check(book) == ([Path("vnca/profile.py")], [])


def test_module_no_chapter_exports_is_orphaned(book):
    (book / "vnca" / "old.py").write_text(export.HEADER + "\nX = 1\n")
    (book / "vnca" / "helper.py").write_text("# hand-written, not generated\n")
    assert export.check(book) == ([], [Path("vnca/old.py")])
    export.write(book)
    assert not (book / "vnca" / "old.py").exists() and (book / "vnca" / "helper.py").exists()


def test_deleted_module_is_stale(book):
    (book / "vnca" / "plot.py").unlink()
    assert export.check(book)[0] == [Path("vnca/plot.py")]


def _add_cell(book, code):
    chapter = book / "book" / "data.md"
    chapter.write_text(chapter.read_text() + f"\n```{{code-cell}} ipython3\n{code}\n```\n")


@pytest.mark.parametrize("code", [
    "#| export vnca.data\nprint('hello')",
    "#| export vnca.data\nfor i in range(3):\n    pass",
    "#| export vnca.data\nimport os\nos.makedirs('x')",
])
def test_exported_code_may_not_act_at_import(book, code):
    _add_cell(book, code)
    with pytest.raises(export.ExportError, match=r"book/data.md, code cell \d+ .*top-level"):
        export.render(book)


@pytest.mark.parametrize("code, message", [
    ("#| export data", "cannot export to 'data'"),
    ("#| exprt vnca.data", "malformed export line"),
    ("#| export vnca.data\ndef f(:\n    pass", "syntax error"),
])
def test_bad_export_lines_are_refused(book, code, message):
    _add_cell(book, code)
    with pytest.raises(export.ExportError, match=message):
        export.render(book)


def test_cells_of_a_module_keep_their_order_and_imports_work(book):
    _add_cell(book, "#| export vnca.extra\nA = 1")
    _add_cell(book, "#| export vnca.extra\nfrom vnca.extra import A as _A\nB = A + 1")
    text = export.render(book)[Path("vnca/extra.py")]
    assert text.index("A = 1") < text.index("B = A + 1")
    ast.parse(text)


def test_missing_chapter_in_toc_is_an_error(book):
    (book / "_toc.yml").write_text((book / "_toc.yml").read_text() + "  - file: book/nowhere\n")
    with pytest.raises(export.ExportError, match="'book/nowhere'"):
        export.render(book)


def test_command_line_check_exits_nonzero_and_names_files(book):
    (book / "vnca" / "profile.py").write_text("# nothing\n")
    script = ROOT / "tools" / "export.py"
    broken = subprocess.run([sys.executable, str(script), "--check", "--root", str(book)],
                            capture_output=True, text=True)
    assert broken.returncode == 1
    assert "stale: vnca/profile.py differs from the chapters" in broken.stderr
    ok = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_importing_the_package_prints_nothing():
    code = "import vnca.data, vnca.profile, vnca.plot"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_modules_import_in_layers_with_no_circle():
    """pyproject.toml's import-linter contract: each module imports only from layers below it,
    deferred imports included, so there is no circle."""
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_every_module_has_a_layer():
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    layered = {name.strip() for layer in contract["layers"] for name in layer.split("|")}
    modules = {p.stem for p in (ROOT / "vnca").glob("*.py")} - {"__init__"}
    assert layered == modules, f"not in a layer: {modules - layered}; no such module: {layered - modules}"


def test_the_layers_check_finds_an_import_upwards(tmp_path):
    """A copy of the package in which writing a file imports the training loop (inside a function,
    as the old circle was held open) breaks the contract."""
    shutil.copytree(ROOT / "vnca", tmp_path / "vnca")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    files = tmp_path / "vnca" / "files.py"
    files.write_text(files.read_text() + "\n\ndef upwards():\n    from vnca.train import fit\n")
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "vnca.files -> vnca.train" in done.stdout and "BROKEN" in done.stdout
