"""How long the book takes to build, as a writer feels it: `make book` in a fresh clone (its setup and
every chapter executed), then again after a change to one chapter's prose (its code unchanged, so
jupyter-cache serves every chapter's outputs and only Sphinx runs).

    python benchmarks/book_build.py                 # writes benchmarks/results/book-build-cpu-2core.json
    python benchmarks/book_build.py --chapter vae   # the chapter whose prose is changed
    python benchmarks/book_build.py --site /tmp/site  # and keep the built site (to look at it)

Both run `make book` in a clone of this repository's HEAD, the first including its setup (a new
virtual environment, the pinned requirements, node_modules), with the data from $VNCA_DATA_DIR and
an empty cache folder ($VNCA_CACHE_DIR). Each chapter's own execution time comes from jupyter-cache.
Run it alone: it times wall clock.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(folder: Path, env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(["make", "book"], cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"the build failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-4000:]}")
    return seconds


def chapter_times(folder: Path) -> dict[str, float]:
    from jupyter_cache import get_cache

    cache = get_cache(folder / "_build" / ".jupyter_cache")
    return {Path(r.uri).stem: round(r.data.get("execution_seconds", float("nan")), 1)
            for r in cache.list_cache_records()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chapter", default="vae", help="the chapter whose prose the second build changes")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "book-build-cpu-2core.json")
    p.add_argument("--site", type=Path, help="copy the built site (_build/html) here, which must not exist")
    a = p.parse_args()
    if a.site and a.site.exists():
        sys.exit(f"--site {a.site}: it exists; name a new folder")
    if not os.environ.get("VNCA_DATA_DIR"):
        sys.exit("set VNCA_DATA_DIR to the data folder (the build would download it, and time that)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
        env = {**env, "VNCA_CACHE_DIR": str(Path(tmp) / "cache"),
               "VNCA_DATA_DIR": str(Path(os.environ["VNCA_DATA_DIR"]).resolve())}
        fresh = build(clone, env)
        print(f"fresh clone: {fresh:.0f} s", flush=True)
        chapters = chapter_times(clone)
        chapter = clone / "book" / f"{a.chapter}.md"
        text = chapter.read_text()
        # a sentence more at the end of the chapter: prose only
        chapter.write_text(text.rstrip("\n") + "\n\nA sentence added to time a prose-only rebuild.\n")
        prose = build(clone, env)
        print(f"after a prose-only change to {a.chapter}: {prose:.0f} s", flush=True)
        if a.site:
            shutil.copytree(clone / "_build" / "html", a.site)
    import jupyter_book

    record = {"command": "python benchmarks/book_build.py (make book, twice)", "fresh_s": fresh, "prose_only_s": prose,
              "prose_chapter": a.chapter, "chapter_execution_s": chapters,
              "chapters_total_s": round(sum(chapters.values()), 1), "cpus": os.cpu_count(),
              "machine": platform.machine(), "jupyter_book": jupyter_book.__version__, "commit": commit,
              "when": time.strftime("%Y-%m-%d")}
    from vnca.files import atomic_write

    atomic_write(a.json, (json.dumps(record, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
