"""Self-contained HTML pages: pictures embedded as data URIs, the style inline, no script and nothing
fetched when the page is viewed (no CDN, no server), so a page opens from disk, offline, years later."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from dlforge.files import replacing

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } th, td { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.text { font-family: ui-monospace, monospace; white-space: pre-wrap; max-width: 480px; vertical-align: top; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; } img { max-width: 100%; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; }
figcaption { color: #555; font-size: .9em; } .muted { color: #777; }
"""


def write_page(path: Path, title: str, body: Sequence[str]) -> Path:
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    with replacing(path, "w") as file:
        file.write(page)
    return path


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{escape(text)}</h{level}>"


def paragraph(text: str, css: str = "") -> str:
    return f'<p class="{css}">{escape(text)}</p>' if css else f"<p>{escape(text)}</p>"


def preformatted(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def details(summary: str, content: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{content}</details>"


def image(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    alt = escape(caption)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: Sequence[str] = ()) -> str:
    """Numbers right-aligned with 6 significant digits; `text_columns` monospaced and wrapped (text samples)."""
    head = "".join(f"<th>{escape(str(column))}</th>" for column in columns)
    body = "".join(
        "<tr>" + "".join(_cell(value, column in text_columns) for column, value in zip(columns, row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, text: bool) -> str:
    if isinstance(value, float):
        return f'<td class="number">{value:.6g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="number">{value}</td>'
    shown = "" if value is None else escape(str(value))
    return f'<td class="text">{shown}</td>' if text else f"<td>{shown}</td>"
