"""Parsing keeps titles and heading paths; bad bytes are rejected with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.readers import DocumentRejected, read_document

MARKDOWN = """# Kettle K3

Intro text.

## Care

### Descaling

Descale every 90 days.

```
# not a heading inside a fence
```

## Warranty

Two years.
"""

HTML = """<html><head><title>Returns policy</title><script>var x = 1;</script></head>
<body><h1>Returns</h1><p>Intro.</p><h2>Window</h2><ul><li>41 days</li></ul>
<h2>Refunds</h2><p>Refunds take <b>5</b> days.</p></body></html>"""


def test_markdown_sections_carry_their_heading_paths() -> None:
    document = read_document(Path("k3.md"), MARKDOWN.encode())
    assert document.title == "Kettle K3"
    paths = {section.heading_path: section.text for section in document.sections}
    assert paths[("Kettle K3", "Care", "Descaling")].startswith("Descale every 90 days.")
    assert "# not a heading" in paths[("Kettle K3", "Care", "Descaling")]
    assert paths[("Kettle K3", "Warranty")] == "Two years."


def test_html_sections_follow_headings_and_drop_scripts() -> None:
    document = read_document(Path("returns.html"), HTML.encode())
    assert document.title == "Returns policy"
    paths = {section.heading_path: section.text for section in document.sections}
    assert paths[("Returns", "Window")] == "41 days"
    assert paths[("Returns", "Refunds")] == "Refunds take 5 days."
    assert all("var x" not in section.text for section in document.sections)


def test_pdf_text_is_extracted_per_page(tmp_path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Service manual")
    for text in ("First page: torque 12 Nm.", "Second page: fuse F2A."):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.cell(text=text)
    document = read_document(Path("manual.pdf"), bytes(pdf.output()))
    assert document.title == "Service manual"
    assert [s.heading_path for s in document.sections] == [("page 1",), ("page 2",)]
    assert "fuse F2A" in document.sections[1].text


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("a.txt", b"", "empty"),
        ("a.md", b"\x00\x01\x02", "binary"),
        ("a.txt", b"caf\xe9", "UTF-8"),
        ("a.pdf", b"%PDF-1.7 garbage", "PDF"),
        ("a.html", b"<html><body><script>x()</script></body></html>", "no text"),
    ],
)
def test_bad_bytes_are_rejected_with_a_reason(name: str, raw: bytes, reason: str) -> None:
    with pytest.raises(DocumentRejected, match=reason):
        read_document(Path(name), raw)
