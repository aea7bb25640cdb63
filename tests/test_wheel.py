"""The package as a user gets it: the wheel alone, in a fresh virtual environment, with no checkout."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from book_assets import build_package  # noqa: E402
from chapter_notebooks import package_version  # noqa: E402


def citation_version() -> str:
    return str(yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"])


@pytest.mark.slow
def test_a_fresh_environment_with_only_the_wheel_draws_and_evaluates(tmp_path):
    # The release's files, as `python -m build` makes them (the sdist, then the wheel from it), pass
    # `twine check` (their metadata and the README that PyPI would show) and carry one version.
    sdist, wheel = build_package(tmp_path / "dist")
    version = package_version(ROOT)
    assert (sdist.name, wheel.name) == (f"vnca-{version}.tar.gz", f"vnca-{version}-py3-none-any.whl")
    checked = subprocess.run([str(Path(sys.executable).parent / "twine"), "check", "--strict", str(sdist),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr
    # Both carry the licence and the shipped models (the manifest and every weights file it names).
    manifest = json.loads((ROOT / "vnca" / "weights" / "manifest.json").read_text())
    weights = {"vnca/weights/manifest.json", *(f"vnca/weights/{e['file']}" for e in manifest["models"].values())}
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"vnca-{version}.dist-info/METADATA").decode()
        names = set(archive.namelist())
    assert f"vnca-{version}.dist-info/licenses/LICENSE" in names and weights <= names, weights - names
    assert f"\nVersion: {version}\n" in metadata and "\nLicense-Expression: MIT\n" in metadata
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(f"vnca-{version}/") for name in archive.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", *weights} <= names, weights - names

    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    # Its dependencies come from the package registry, as they would for a user.
    # With Jupyter's notebook runner, to run downloaded chapter notebooks as a student would.
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel),
                    "nbconvert", "ipykernel"], check=True, timeout=1200)
    work = tmp_path / "elsewhere"  # not the checkout: only the installed package is importable
    work.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment["MPLBACKEND"] = "Agg"

    def vnca(*args):
        result = subprocess.run([str(bin_dir / "vnca"), *args], cwd=work, env=environment,
                                capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result

    where = subprocess.run([str(bin_dir / "python"), "-c", "import vnca; print(vnca.__file__)"], cwd=work,
                           env=environment, capture_output=True, text=True, check=True).stdout
    assert str(env_dir) in where and str(ROOT) not in where
    # What a user first runs: the version (the wheel's, vnca.__version__ and CITATION.cff's agree),
    # the training command's help, and a shipped model, verified against its manifest.
    assert vnca("--version").stdout.strip() == f"vnca {version}" == f"vnca {citation_version()}"
    assert "--model" in vnca("train", "--help").stdout
    loaded = subprocess.run([str(bin_dir / "python"), "-c", "import vnca.pretrained as p, vnca.vae as v; "
                             "print(v.parameter_count(p.load('doubling-laptop')))"], cwd=work, env=environment,
                            capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0 and int(loaded.stdout) > 100_000, loaded.stderr[-3000:]
    vnca("figures", "doubling-laptop", "--out", "figures", "--tsne-images", "200")
    pngs = sorted((work / "figures").glob("*.png"))
    assert len(pngs) >= 5 and all(p.stat().st_size > 10_000 for p in pngs), pngs
    vnca("evaluate", "doubling-laptop", "--images", "8", "--out", "record.json", "--no-progress")
    record = json.loads((work / "record.json").read_text())
    assert record["images"] == 8 and record["model"] == "doubling" and -200 < record["log_likelihood"] < -50

    # Downloaded chapter notebooks run top to bottom in plain Jupyter, from the wheel alone: the
    # install cell sees vnca installed, the results table comes from the shipped models' records.
    for name in ("intro", "doubling", "evaluate"):
        notebook = work / f"{name}.ipynb"
        shutil.copy(ROOT / "notebooks" / notebook.name, notebook)
        run = subprocess.run([str(bin_dir / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                              "--output", f"{name}-run.ipynb", str(notebook)], cwd=work,
                             env=environment, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{name}: {run.stderr[-3000:]}"
        executed = nbformat.read(work / f"{name}-run.ipynb", as_version=4)
        code = [c for c in executed.cells if c.cell_type == "code"]
        assert code and all(c.execution_count for c in code), name
        text = json.dumps([c.get("outputs", []) for c in code])
        assert "Traceback" not in text and '"output_type": "error"' not in text, name
        if name in ("intro", "evaluate"):  # the shipped models' rows of the results table
            assert "2,000 images" in text or "10,000 images" in text, name
        if name == "doubling":  # its exercises: solutions closed, no MyST left
            markdown = "\n".join(c.source for c in executed.cells if c.cell_type == "markdown")
            assert "<details>" in markdown and ":::" not in markdown and "{admonition}" not in markdown
