"""report.html from report.md: one source for both, images embedded so the file travels alone.

Only the markdown the bench itself writes is understood — headings, paragraphs, ``-`` lists,
pipe tables, images on a line of their own, ``code`` and **bold** — so this is a few lines
rather than a dependency. Every piece of text is HTML-escaped before markup is added.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["markdown_to_html"]

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*]+)\*(?![*\w])")

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; }
td:nth-child(-n+3), th:nth-child(-n+3) { text-align: left; }
code { background: #f4f4f4; padding: 0 3px; }
img { max-width: 100%; }
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = _CODE.sub(r"<code>\1</code>", out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _ITALIC.sub(r"<em>\1</em>", out)


def _cells(line: str) -> list[str]:
    inner = line.strip()[1:-1]
    parts = re.split(r"(?<!\\)\|", inner)
    return [p.strip().replace("\\|", "|") for p in parts]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(x) for x in lines[2:]]
    out = ["<table><thead><tr>", *(f"<th>{_inline(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in body:
        out += ["<tr>", *(f"<td>{_inline(c)}</td>" for c in row), "</tr>"]
    return "".join([*out, "</tbody></table>"])


def _image(alt: str, src: str, base: Path | None) -> str:
    path = Path(src) if base is None else base / src
    try:
        data = base64.b64encode(path.read_bytes()).decode()
        src_attr = f"data:image/png;base64,{data}"
    except OSError:
        src_attr = html.escape(src)
    return f'<p><img alt="{html.escape(alt)}" src="{src_attr}"></p>'


def _flush_list(items: list[str], out: list[str]) -> None:
    if items:
        out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        items.clear()


def markdown_to_html(markdown: str, *, title: str, base: Path | None = None) -> str:
    """A standalone page; images relative to ``base`` are embedded as data: URIs."""
    out: list[str] = []
    items: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("- "):
            _flush_list(items, out)
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
            continue
        if m := re.match(r"^(#{1,4}) (.*)$", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := _IMAGE.match(line.strip()):
            out.append(_image(m.group(1), m.group(2), base))
        elif line.startswith("- "):
            items.append(line[2:])
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    _flush_list(items, out)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(out)
        + "\n</body></html>\n"
    )
