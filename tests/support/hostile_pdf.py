"""A small PDF whose Flate-compressed pages expand to megabytes of text (a decompression bomb
for text extraction), written by hand so the test controls every byte."""

from __future__ import annotations

import zlib

LINE = b"(The K3 kettle descales itself every ninety days; its fuse is F2A.) Tj T*\n"


def _page_content(text_bytes: int) -> bytes:
    """One page's content stream, compressed: lines of text until text_bytes."""
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(b"BT /F1 10 Tf 12 TL 72 720 Td\n")]
    parts += [compressor.compress(LINE) for _ in range(text_bytes // len(LINE))]
    parts += [compressor.compress(b"ET\n"), compressor.flush()]
    return b"".join(parts)


def compressed_text_pdf(pages: int, text_bytes_per_page: int) -> bytes:
    """A valid PDF of `pages` pages, each a FlateDecode stream of about text_bytes_per_page."""
    content = _page_content(text_bytes_per_page)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, once the pages' numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids: list[int] = []
    for _ in range(pages):
        kids.append(len(objects) + 1)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
            b" /Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (len(objects) + 2)
        )
        objects.append(
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content)
            + content
            + b"\nendstream"
        )
    references = b" ".join(b"%d 0 R" % kid for kid in kids)
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (references, pages)
    out = bytearray(b"%PDF-1.7\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
