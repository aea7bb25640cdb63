"""Keep the chapters' code within the page's code column (79 characters).

    python tools/format_chapters.py          # format every chapter's code cells in place
    python tools/format_chapters.py --check  # exit 1, listing each line that is too long

Formatting is `ruff format` at line length 79 (quotes as written), then two things a formatter
leaves alone: comments are rewrapped (a trailing comment that does not fit moves above its line),
and docstring paragraphs are refilled. Strings that are still too long are listed for a person to
split. Run `python tools/export.py` afterwards: the package is the chapters' code.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 79  # what the book's code column shows on a 1,280-pixel-wide screen
CELL = re.compile(r"(```\{code-cell\}[^\n]*\n(?::[^\n]*\n)*)(.*?)(^```)", re.S | re.M)
DIRECTIVE = re.compile(r"^#\|")


def cells(text: str):
    """(start, end, body) of each code cell's body in a chapter."""
    for match in CELL.finditer(text):
        yield match.start(2), match.end(2), match.group(2)


def long_lines(root: Path = ROOT) -> list[str]:
    """`chapter:line: text` for every chapter code line wider than the column."""
    found = []
    for path in sorted((root / "book").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for start, _, body in cells(text):
            first = text.count("\n", 0, start) + 1
            for offset, line in enumerate(body.splitlines()):
                if len(line) > WIDTH:
                    found.append(f"{path.relative_to(root)}:{first + offset}: {line.strip()[:60]}")
    return found


def ruff(code: str) -> str:
    command = [shutil.which("ruff") or str(Path(sys.executable).parent / "ruff"), "format", f"--line-length={WIDTH}",
               "--config", "format.quote-style='preserve'", "--stdin-filename", "cell.py", "-"]
    done = subprocess.run(command, input=code, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"ruff could not format a cell:\n{done.stderr}\n{code}")
    return done.stdout


def wrap_comments(code: str) -> str:
    """Move a trailing comment that does not fit above its line, then refill
    each block of full-line comments that has a line wider than the column."""
    lines = []
    for line in code.splitlines():
        comment = _trailing_comment(line)
        if len(line) > WIDTH and comment is not None and not DIRECTIVE.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + "# " + line[comment + 1:].strip(), line[:comment].rstrip()]
        else:
            lines.append(line)
    out, i = [], 0
    while i < len(lines):
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        j = i
        while (j < len(lines) and lines[j].startswith(indent + "#")
               and not DIRECTIVE.match(lines[j].lstrip())):
            j += 1
        if j == i:
            out.append(lines[i])
            i += 1
            continue
        block = lines[i:j]
        out += block if all(len(b) <= WIDTH for b in block) else _refill_comment(block, indent)
        i = j
    return "\n".join(out) + ("\n" if code.endswith("\n") else "")


def _refill_comment(block: list[str], indent: str) -> list[str]:
    out, words = [], []

    def flush():
        if words:
            out.extend(textwrap.wrap(" ".join(words), WIDTH, initial_indent=indent + "# ",
                                     subsequent_indent=indent + "# ", break_on_hyphens=False))
            words.clear()

    for line in block:
        text = line.strip()[1:].strip()
        if text:
            words.append(text)
        else:  # an empty comment line separates paragraphs
            flush()
            out.append(indent + "#")
    flush()
    return out


def _trailing_comment(line: str) -> int | None:
    """The index of a comment's `#` after code on `line`, outside strings; None if none."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == "\\":
                continue
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#":
            return i if line[:i].strip() else None
    return None


def refill_docstrings(code: str) -> str:
    """Refill, paragraph by paragraph, each docstring that has a line wider than the column."""
    lines = code.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith('"""') and stripped.count('"""') == 2:
            out += _refill([line]) if len(line) > WIDTH else [line]
            i += 1
            continue
        if not stripped.startswith('"""'):
            out.append(line)
            i += 1
            continue
        j = i + 1  # a docstring over several lines: find its end
        while j < len(lines) and '"""' not in lines[j]:
            j += 1
        block = lines[i:j + 1]
        if all(len(b) <= WIDTH for b in block):
            out += block
        else:
            out += _refill(block)
        i = j + 1
    return "\n".join(out) + ("\n" if code.endswith("\n") else "")


def _refill(block: list[str]) -> list[str]:
    indent = block[0][: len(block[0]) - len(block[0].lstrip())]
    body = [indent + block[0].strip()] + block[1:]  # the first line keeps its quotes
    body[-1] = body[-1].rstrip()
    body[-1] = body[-1][:-3] if body[-1].endswith('"""') else body[-1]
    closing_alone = not body[-1].strip()
    # paragraphs are refilled; blank lines, indented lines (examples) and list items are kept
    out, current = [], []

    def flush():
        if current:
            # room for the closing quotes, which ruff puts back on the last line
            out.extend(textwrap.wrap(" ".join(current), WIDTH - 3, initial_indent=indent,
                                     subsequent_indent=indent, break_on_hyphens=False))
            current.clear()

    for line in body:
        text = line.strip()
        deeper = len(line) - len(line.lstrip()) > len(indent)
        if not text:
            flush()
            out.append("")
        elif deeper and not current:
            out.append(line.rstrip())
        elif text.startswith(("- ", "* ")) or deeper:
            flush()
            current.append(text)
        else:
            current.append(text)
    flush()
    while out and not out[-1].strip():
        out.pop()
    if not closing_alone and len(out[-1]) + 3 <= WIDTH:
        out[-1] += '"""'
    else:
        out.append(indent + '"""')
    return out


STRING = re.compile(r"^(?P<indent> *)(?P<key>\w+=)?(?P<prefix>f?)(?P<q>[\"'])")


def split_strings(code: str) -> str:
    """Split a string literal that starts a line too long into adjacent literals, at spaces
    outside f-string fields (inside brackets, Python joins adjacent literals)."""
    out = []
    for line in code.splitlines():
        match = STRING.match(line)
        if len(line) <= WIDTH or not match or line.lstrip().startswith('"""'):
            out.append(line)
            continue
        end, depth, i = None, 0, match.end()
        while i < len(line):
            char = line[i]
            if char == "\\":
                i += 2
                continue
            if match["prefix"] and char in "{}":
                depth += 1 if char == "{" else -1
            elif char == match["q"] and depth == 0:
                end = i
                break
            i += 1
        if end is None:
            out.append(line)
            continue
        content, suffix = line[match.end():end], line[end + 1:]
        words, depth, start = [], 0, 0
        for k, char in enumerate(content):
            if match["prefix"] and char in "{}":
                depth += 1 if char == "{" else -1
            elif char == " " and depth == 0:
                words.append(content[start:k + 1])
                start = k + 1
        words.append(content[start:])
        lead = match["indent"] + (match["key"] or "")
        room = WIDTH - len(lead) - 3
        chunks = _greedy(words, room)
        for narrower in range(room - 1, 0, -1):  # balance: no short last piece
            fewer = _greedy(words, narrower)
            if len(fewer) > len(chunks) or max(map(len, fewer)) > narrower:
                break
            chunks = fewer
        if len(chunks) == 1:
            out.append(line)
            continue
        q = match["q"]
        for n, chunk in enumerate(chunks):
            prefix = match["prefix"] if "{" in chunk else ""
            start = lead if n == 0 else " " * len(lead)
            out.append(f"{start}{prefix}{q}{chunk}{q}" + (suffix if n == len(chunks) - 1 else ""))
    return "\n".join(out) + ("\n" if code.endswith("\n") else "")


def _greedy(words: list[str], room: int) -> list[str]:
    chunks, current = [], ""
    for word in words:
        if current and len(current) + len(word) > room:
            chunks.append(current)
            current = ""
        current += word
    return chunks + [current]


def format_cell(body: str) -> str:
    lines = body.splitlines(keepends=True)
    head = [line for line in lines if DIRECTIVE.match(line)]
    if head != lines[: len(head)]:
        head = []
    code = "".join(lines[len(head):])
    if not code.strip():
        return body
    # a trailing comment that does not fit goes above its line before ruff would
    # put it inside brackets
    code = ruff(wrap_comments(code))
    code = split_strings(refill_docstrings(wrap_comments(code)))
    code = ruff(code)  # once more: split strings may need brackets re-indented
    return "".join(head) + code


def format_chapter(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    pieces, last = [], 0
    for start, end, body in cells(text):
        pieces += [text[last:start], format_cell(body)]
        last = end
    new = "".join(pieces) + text[last:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the lines too long")
    args = parser.parse_args(argv)
    if not args.check:
        for path in sorted((ROOT / "book").glob("*.md")):
            if format_chapter(path):
                print(f"formatted {path.relative_to(ROOT)}")
    found = long_lines()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} code lines wider than {WIDTH} characters", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
