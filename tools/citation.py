"""The book's "How to cite" section, generated from CITATION.cff so that the two cannot disagree.

    python tools/citation.py          # rewrite the block in book/intro.md from CITATION.cff
    python tools/citation.py --check  # exit 1 if the block differs from what CITATION.cff says

The block sits between two HTML comments in the introduction (invisible on the page and in the
notebook). `make export` runs this with the exporter; a test fails when the block is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CFF = "CITATION.cff"
PAGE = Path("book") / "intro.md"
START = "<!-- generated from CITATION.cff by tools/citation.py (make export): edit that file -->"
END = "<!-- end of the block generated from CITATION.cff -->"
BLOCK = re.compile(re.escape(START) + r"\n(?:.*?\n)?" + re.escape(END), re.DOTALL)


def load(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / CFF).read_text(encoding="utf-8"))


def _authors(entry: dict, braces: bool = True) -> list[str]:
    names = []
    for a in entry["authors"]:
        if "name" in a:  # an entity: braces keep BibTeX from splitting it into first and last names
            names.append(f"{{{a['name']}}}" if braces else a["name"])
        else:
            names.append(f"{a['family-names']}, {a['given-names']}")
    return names


def _key(entry: dict) -> str:
    """A reference's first author, year and first word of the title (palm2022variational); the
    software's name (vnca)."""
    word = next(w for w in re.findall(r"[A-Za-z]+", entry["title"]) if w.lower() not in ("re", "the", "a"))
    first = entry["authors"][0]
    if "family-names" not in first:
        return word.lower()
    who = re.sub(r"[^a-z]", "", first["family-names"].lower().replace("é", "e"))
    return f"{who}{entry.get('year', '')}{word.lower()}"


def bibtex(entry: dict, kind: str, fields: list[tuple[str, object]]) -> str:
    lines = [f"@{kind}{{{_key(entry)},"]
    lines += [f"  {name} = {{{value}}}," for name, value in fields if value not in (None, "")]
    return "\n".join(lines) + "\n}"


def software(cff: dict) -> str:
    return bibtex(cff, "software", [
        ("author", " and ".join(_authors(cff))),
        ("title", cff["title"]),
        ("version", cff["version"]),
        ("license", cff.get("license")),
        ("url", cff.get("url")),
        ("repository", cff.get("repository-code")),
    ])


def reference(ref: dict) -> str:
    common = [("author", " and ".join(_authors(ref))), ("title", ref["title"])]
    if ref["type"] == "conference-paper":
        return bibtex(ref, "inproceedings", [
            *common, ("booktitle", ref.get("collection-title")), ("year", ref.get("year")),
            ("doi", ref.get("doi")), ("url", ref.get("url"))])
    return bibtex(ref, "article", [
        *common, ("journal", ref.get("journal")), ("volume", ref.get("volume")),
        ("number", ref.get("issue")), ("eid", ref.get("number")), ("year", ref.get("year")),
        ("doi", ref.get("doi")), ("url", ref.get("url"))])


def block(cff: dict) -> str:
    """The Markdown between the markers."""
    message = " ".join(cff["message"].split())
    references = "\n\n".join(reference(r) for r in cff.get("references", []))
    prose = (f"{message} The same file, `CITATION.cff` in the repository, feeds GitHub's \"Cite "
             f"this repository\" button. The book and the package, version {cff['version']} "
             f"({cff['license']} licence):")
    return "\n".join([
        START,
        textwrap.fill(prose, 100, break_on_hyphens=False),
        "",
        "```bibtex",
        software(cff),
        "```",
        "",
        "The paper and the reproduction:",
        "",
        "```bibtex",
        references,
        "```",
        END,
    ])


def render(root: Path = ROOT) -> str:
    """book/intro.md with its block made from CITATION.cff."""
    text = (root / PAGE).read_text(encoding="utf-8")
    if len(BLOCK.findall(text)) != 1:
        raise ValueError(f"{PAGE} must hold the citation block once, between {START!r} and {END!r}")
    return BLOCK.sub(lambda _: block(load(root)), text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the block is stale")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    expected = render(args.root)
    page = args.root / PAGE
    if page.read_text(encoding="utf-8") == expected:
        print(f"{PAGE}: the citation block matches {CFF}")
        return 0
    if args.check:
        print(f"stale: {PAGE}'s citation block differs from {CFF}; run `python tools/citation.py`",
              file=sys.stderr)
        return 1
    page.write_text(expected, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
