"""Helpers that turn results into Dagster metadata values."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg

MAX_TABLE_ROWS = 50


def markdown_table(rows: list[dict], columns: list[str] | None = None, limit: int = MAX_TABLE_ROWS) -> dg.MetadataValue:
    """Render `rows` as a Markdown table, cut to `limit` rows with a note."""
    if not rows:
        return dg.MetadataValue.md("(none)")
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        cells = [str(row.get(column, "")).replace("|", "\\|").replace("\n", " ") for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more rows not shown.")
    return dg.MetadataValue.md("\n".join(lines))


def image(path: Path) -> dg.MetadataValue:
    """Embed a PNG in the UI as a data URI, followed by its file path."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"![{Path(path).name}](data:image/png;base64,{encoded})\n\n`{path}`")
