"""Self-contained HTML reports: one file, images embedded as base64 PNG, no external assets.

A report is a title plus a list of blocks (:class:`Heading`, :class:`Text`, :class:`Table`,
:class:`Figure`); :func:`render_html` turns them into a page, :func:`write_html` writes it
atomically. All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Union

from synthloop.utils.atomic import atomic_write_text

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Table:
    """``header`` and ``rows`` of cells; numbers are formatted with ``float_format``."""

    header: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str | None = None
    float_format: str = "{:.4g}"


@dataclass(frozen=True)
class Figure:
    """A PNG image (raw bytes) with a caption."""

    png: bytes
    caption: str = ""
    alt: str = ""


Block = Union[Heading, Text, Table, Figure]

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 980px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
.meta { color: #666; font-size: 0.85rem; margin-bottom: 1.5rem; }
table { border-collapse: collapse; margin: 0.8rem 0 1.4rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.7rem; text-align: left; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.88rem; margin-top: 0.3rem; }
"""


def _cell(value: object, float_format: str) -> tuple[str, bool]:
    if value is None:
        return "&ndash;", False
    if isinstance(value, bool):
        return html.escape(str(value)), False
    if isinstance(value, float):
        return html.escape(float_format.format(value)), True
    if isinstance(value, int):
        return html.escape(str(value)), True
    return html.escape(str(value)), False


def _render_block(block: Block) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 2), 6)
        return f"<h{level}>{html.escape(block.text)}</h{level}>"
    if isinstance(block, Text):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        parts = ["<table>"]
        if block.caption:
            parts.append(f"<caption>{html.escape(block.caption)}</caption>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in block.header) + "</tr>")
        for row in block.rows:
            cells = []
            for value in row:
                text, numeric = _cell(value, block.float_format)
                cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        return "\n".join(parts)
    if isinstance(block, Figure):
        if not block.png.startswith(_PNG_MAGIC):
            raise ValueError("Figure.png must hold PNG bytes")
        data = base64.b64encode(block.png).decode("ascii")
        alt = html.escape(block.alt or block.caption, quote=True)
        caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{caption}</figure>'
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_html(title: str, blocks: Sequence[Block], *, subtitle: str | None = None) -> str:
    """The whole page as a string (UTF-8, no external references)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = html.escape(f"{subtitle} · generated {stamp}" if subtitle else f"generated {stamp}")
    body = "\n".join(_render_block(b) for b in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<div class=\"meta\">{meta}</div>\n{body}\n</body>\n</html>\n"
    )


def write_html(path: str | Path, title: str, blocks: Sequence[Block], *, subtitle: str | None = None) -> Path:
    """Render and write the page atomically; returns ``path``."""
    path = Path(path)
    atomic_write_text(path, render_html(title, blocks, subtitle=subtitle))
    return path
