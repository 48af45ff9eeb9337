"""Validate corpus/qa.jsonl against the documents in corpus/docs/.

Checks: every line parses, required fields present, ids unique, the source
file exists, and the gold answer occurs (case-insensitive, whitespace
normalised) in the source document's extracted text. Also warns when an
answer string also occurs in other documents (possible ambiguity).

Usage: python corpus/check_qa.py   (exit code 1 on any error)
"""

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DOCS = ROOT / "docs"
QA = ROOT / "qa.jsonl"
REQUIRED = ("id", "question", "answer", "source")


def extract_text(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".md", ".txt"):
        return path.read_text(encoding="utf-8")
    if suffix in (".html", ".htm"):
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        return soup.get_text(" ")
    if suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
    raise ValueError(f"unsupported format: {path}")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def main() -> int:
    errors: list[str] = []
    warnings: list[str] = []

    doc_paths = sorted(p for p in DOCS.rglob("*") if p.is_file())
    texts = {p.relative_to(DOCS).as_posix(): norm(extract_text(p)) for p in doc_paths}
    doc_formats = Counter(Path(rel).suffix.lstrip(".") for rel in texts)

    seen_ids: set[str] = set()
    qa_formats: Counter = Counter()
    covered: set[str] = set()
    n = 0
    for lineno, line in enumerate(QA.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        n += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {lineno}: invalid JSON ({exc})")
            continue
        missing = [k for k in REQUIRED if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            errors.append(f"line {lineno}: missing/empty fields {missing}")
            continue
        qid, answer, source = row["id"], row["answer"], row["source"]
        if qid in seen_ids:
            errors.append(f"line {lineno}: duplicate id {qid}")
        seen_ids.add(qid)
        if source not in texts:
            errors.append(f"{qid}: source not found: {source}")
            continue
        qa_formats[Path(source).suffix.lstrip(".")] += 1
        covered.add(source)
        needle = norm(answer)
        if needle not in texts[source]:
            errors.append(f"{qid}: answer {answer!r} not found in {source}")
        others = [rel for rel, t in texts.items() if rel != source and needle in t]
        if others:
            warnings.append(f"{qid}: answer {answer!r} also appears in {', '.join(others)}")

    print(
        f"documents: {len(texts)} " + " ".join(f"{k}={v}" for k, v in sorted(doc_formats.items()))
    )
    print(f"qa pairs:  {n} " + " ".join(f"{k}={v}" for k, v in sorted(qa_formats.items())))
    uncovered = sorted(set(texts) - covered)
    print(f"documents with at least one question: {len(covered)}/{len(texts)}")
    for rel in uncovered:
        print(f"  no question targets {rel}")
    for w in warnings:
        print(f"WARNING {w}")
    for e in errors:
        print(f"ERROR {e}")
    print("OK" if not errors else f"FAILED with {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
