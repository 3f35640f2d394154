"""A tiny document builder: the same headings, paragraphs, tables and images as Markdown and as HTML."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any, Sequence

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
code{background:#f3f3f3;padding:0 .2em}h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;margin-top:1.6em}
.note{color:#555;font-size:.92em}"""


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers with fixed digits, nan as an en dash, everything else as text."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _inline_html(text: str) -> str:
    """Markdown's **bold** and `code` in a paragraph, escaped for HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


class Document:
    """Collects blocks, renders them to Markdown and to a standalone HTML page."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, note: bool = False) -> None:
        self.md += [text, ""]
        css = ' class="note"' if note else ""
        self.html.append(f"<p{css}>{_inline_html(text)}</p>")

    def bullets(self, items: Sequence[str]) -> None:
        self.md += [f"- {item}" for item in items] + [""]
        self.html.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in items) + "</ul>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[fmt(v) for v in row] for row in rows]
        self.md.append("| " + " | ".join(header) + " |")
        self.md.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        self.md += ["| " + " | ".join(row) + " |" for row in cells] + [""]
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in cells)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def image(self, path: Path, alt: str) -> None:
        """An image next to the report files (referenced by file name)."""
        self.md += [f"![{alt}]({path.name})", ""]
        self.html.append(f'<p><img src="{html.escape(path.name)}" alt="{html.escape(alt)}"></p>')

    def write(self, directory: Path, stem: str = "report") -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md_path, html_path = directory / f"{stem}.md", directory / f"{stem}.html"
        md_path.write_text("\n".join(self.md), encoding="utf-8")
        page = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(self.title)}"
                f"</title><style>{CSS}</style></head><body>\n" + "\n".join(self.html) + "\n</body></html>\n")
        html_path.write_text(page, encoding="utf-8")
        return md_path, html_path
