"""What a release is made of: the workflows that publish the book and test pull requests, the licence,
the citation, and one version everywhere. The wheel itself is built and checked in test_wheel.py."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import vnca
from conftest import vnca_command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import chapter_notebooks  # noqa: E402
import citation  # noqa: E402

WORKFLOWS = ROOT / ".github" / "workflows"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def readme_commands() -> list[str]:
    """The README's commands for a fresh machine: the code block under "Two commands"."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands\n.*?```bash\n(.*?)```", text, re.DOTALL)[1]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def workflow(name: str) -> dict:
    parsed = yaml.safe_load((WORKFLOWS / name).read_text())
    parsed["on"] = parsed.pop(True, parsed.get("on"))  # YAML 1.1 reads the key `on` as true
    return parsed


def steps(parsed: dict) -> list[dict]:
    return [step for job in parsed["jobs"].values() for step in job.get("steps", [])]


def test_the_readme_has_two_commands():
    assert readme_commands() == ["make book", "make test"]


def test_the_pages_workflow_builds_with_the_readmes_command_and_deploys_the_site():
    pages = workflow("pages.yml")
    assert pages["on"]["push"]["branches"] == ["main"]
    build, deploy = pages["jobs"]["build"], pages["jobs"]["deploy"]
    assert [s["run"] for s in steps(pages) if "run" in s] == ["make book"]
    uses = {s["uses"].split("@")[0]: s for s in build["steps"] if "uses" in s}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "actions/configure-pages" in uses
    # GitHub's way to publish an artifact to Pages: a job that needs the build, may write Pages and
    # obtain an OIDC token, in the github-pages environment; the build itself only reads.
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert pages["permissions"] == {"contents": "read"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    # caches: pip's downloads, npm's (setup-node), and the data the chapters download
    cached = {s["with"]["path"] for s in build["steps"] if s.get("uses", "").startswith("actions/cache@")}
    assert cached == {"~/.cache/pip", "~/.cache/vnca"}
    assert uses["actions/setup-node"]["with"]["cache"] == "npm"


def test_the_tests_workflow_runs_the_readmes_test_command_on_pull_requests():
    tests = workflow("tests.yml")
    assert "pull_request" in tests["on"]
    assert [s["run"] for s in steps(tests) if "run" in s] == ["make test"]
    (run,) = [s for s in steps(tests) if "run" in s]
    data = next(s for s in steps(tests) if s.get("uses", "").startswith("actions/cache/restore@"))
    assert data["with"]["path"] == "~/.cache/vnca" and f"steps.{data['id']}.outputs" in run["env"]["VNCA_DATA_DIR"]


@pytest.mark.parametrize("name", ["pages.yml", "tests.yml"])
def test_workflows_run_on_the_readmes_machine_with_actions_pinned_to_versions(name):
    parsed = workflow(name)
    assert set(WORKFLOWS.glob("*.yml")) == {WORKFLOWS / "pages.yml", WORKFLOWS / "tests.yml"}
    for job_name, job in parsed["jobs"].items():
        if any("run" in s for s in job.get("steps", [])):  # a job that runs a README command
            assert job["container"] == "python:3.11-bookworm", job_name  # Debian, Python 3.11, make
            assert job["timeout-minutes"] <= 180
    for step in steps(parsed):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", step["uses"]), step["uses"]


def _schema_check(schema: str, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_workflows_pass_the_github_workflow_schema_and_a_broken_one_does_not(tmp_path):
    """check-jsonschema, with the workflow schema it ships (SchemaStore's), offline."""
    done = _schema_check("vendor.github-workflows", *sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yml"
    text = (WORKFLOWS / "pages.yml").read_text()
    broken.write_text(text.replace("runs-on: ubuntu-24.04\n    permissions:", "runs_on: ubuntu-24.04\n    permissions:"))
    assert broken.read_text() != text
    assert _schema_check("vendor.github-workflows", broken).returncode == 1


def test_citation_file_passes_its_schema_and_a_broken_one_does_not(tmp_path):
    done = _schema_check("vendor.citation-file-format", ROOT / "CITATION.cff")
    assert done.returncode == 0, done.stdout + done.stderr
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    del cff["authors"]
    broken = tmp_path / "CITATION.cff"
    broken.write_text(yaml.safe_dump(cff))
    assert _schema_check("vendor.citation-file-format", broken).returncode == 1


def test_the_citation_names_this_package_its_licence_its_site_and_the_two_works_it_builds_on():
    cff = citation.load()
    repo = chapter_notebooks.repository(ROOT)
    owner, name = repo.owner_repo.split("/")
    assert cff["repository-code"] == repo.url
    assert cff["url"] == f"https://{owner}.github.io/{name}/"  # where pages.yml publishes the site
    assert cff["license"] == "MIT"
    assert re.search(r'^license = "MIT"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License\n") and "THE SOFTWARE IS PROVIDED \"AS IS\"" in licence
    titles = [r["title"] for r in cff["references"]]
    assert titles == ["Variational Neural Cellular Automata", "[Re] Variational Neural Cellular Automata"]
    assert "arXiv.2201.12360" in cff["references"][0]["doi"]


def test_the_books_how_to_cite_section_is_generated_from_the_citation_file(tmp_path):
    intro = (ROOT / citation.PAGE).read_text()
    assert citation.render(ROOT) == intro, "run `python tools/citation.py` (make export does)"
    section = intro.split("## How to cite")[1].split("\n## ")[0]
    cff = citation.load()
    assert f"version = {{{cff['version']}}}" in section and "@software{vnca," in section
    assert "@inproceedings{palm2022variational," in section and "@article{aillet2023variational," in section
    # the check fails when the file changes and the page does not
    for name in ("CITATION.cff", "book/intro.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "CITATION.cff").write_text((ROOT / "CITATION.cff").read_text().replace("year: 2023", "year: 2024"))
    assert citation.main(["--check", "--root", str(tmp_path)]) == 1
    assert citation.main(["--root", str(tmp_path)]) == 0 and citation.main(["--check", "--root", str(tmp_path)]) == 0
    assert "year = {2024}" in (tmp_path / "book/intro.md").read_text()


def test_one_version_everywhere():
    version = vnca.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert chapter_notebooks.package_version(ROOT) == version  # what setuptools and the site read
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()
    assert citation.load()["version"] == version
    done = vnca_command("--version", timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == f"vnca {version}", done.stdout + done.stderr
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.findall(r"^## (\d+\.\d+\.\d+)", changelog, re.MULTILINE)[0] == version  # the newest first
    readme = (ROOT / "README.md").read_text()
    assert f"Version {version} (`vnca --version`" in readme and f"<{citation.load()['url']}>" in readme
    # every page that names the wheel names this version's
    for path in [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]:
        for wheel in re.findall(r"vnca-[\w.]+-py3-none-any\.whl", path.read_text()):
            assert wheel == chapter_notebooks.wheel_name(ROOT), (path.name, wheel)
