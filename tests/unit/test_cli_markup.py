"""File names, headings and passages are printed as written: never read as Rich markup, never
as terminal escape sequences (no crash, no hyperlink)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from service.cli.main import app

HYPERLINK = "\x1b]8;"  # OSC 8: a terminal hyperlink
ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")
# Relative paths as ingest reports them: their slashes are folders.
ODD_NAME = "x[/y]z.bin"
LINK_NAME = "[link=https:example.com]a[/link].bin"
HEADING = "[/bold] Release [link=file:///etc/passwd]notes[/link]"
BODY = (
    "The K3 kettle [bold]descales[/bold] every ninety days."
    " \x1b]8;;file:///etc/passwd\x1b\\Click here\x1b]8;;\x1b\\ for the manual."
)


def test_document_derived_text_is_printed_verbatim(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in (ODD_NAME, LINK_NAME):
        (docs / name).parent.mkdir(parents=True)
        (docs / name).write_bytes(b"\x00")
    (docs / "release.md").write_text(f"# {HEADING}\n\n{BODY}\n")
    # A wide terminal that renders colour and hyperlinks, as a user's would.
    env = {"LADDER_DATA_DIR": str(tmp_path / "data"), "FORCE_COLOR": "1", "COLUMNS": "400"}
    runner = CliRunner()

    ingested = runner.invoke(app, ["ingest", str(docs), "--collection", "docs"], env=env)
    assert ingested.exit_code == 0, ingested.output
    shown = ANSI_STYLE.sub("", ingested.output)
    assert ODD_NAME in shown and LINK_NAME in shown
    assert HYPERLINK not in ingested.output

    found = runner.invoke(app, ["search", "kettle descales", "--collection", "docs"], env=env)
    assert found.exit_code == 0, found.output
    shown = ANSI_STYLE.sub("", found.output)
    assert f"release.md ({HEADING})" in shown
    assert "[bold]descales[/bold]" in shown
    assert "Click here" in shown and HYPERLINK not in found.output
