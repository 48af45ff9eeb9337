"""A 2 MB one-line text chunks with a bounded number of tokenizer calls (the splitter used to count
every sentence, word or character it tried), and ordinary documents chunk exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from ingest.chunking import Chunker, ChunkingOptions
from ingest.embedder import bundled_embedder_path
from ingest.pipeline import discover
from ingest.readers import ParsedDocument, Section, read_document
from tests.support.paths import CORPUS_DOCS

TWO_MB = 2_000_000
OPTIONS = ChunkingOptions(size=200, overlap=0)


class CountingTokenizer:
    """The embedder's own tokenizer (as Embedder.tokenize runs it), counting its calls."""

    def __init__(self) -> None:
        self.tokenizer = Tokenizer.from_file(str(bundled_embedder_path() / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.calls = 0

    def __call__(self, text: str) -> list[int]:
        self.calls += 1
        return self.count(text)

    def count(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.fixture()
def tokenize() -> CountingTokenizer:
    return CountingTokenizer()


def one_line(text: str) -> ParsedDocument:
    return ParsedDocument("one line", (Section((), text),), "text")


def split(tokenize: CountingTokenizer, text: str) -> list[str]:
    chunks = Chunker(OPTIONS, tokenize).split("one-line.txt", one_line(text), "0" * 64)
    return [chunk.text for chunk in chunks]


@pytest.mark.parametrize(
    "unit",
    [
        "The K3 kettle descales itself every ninety days. ",  # sentences
        "kettle descales itself every ninety days ",  # words, no sentence breaks
        "=-",  # no spaces: each character is a token
        "水壶每九十天自动除垢",  # CJK: no spaces, a token per character
    ],
)
def test_a_two_megabyte_line_costs_few_tokenizer_calls(
    tokenize: CountingTokenizer, unit: str
) -> None:
    text = unit * (TWO_MB // len(unit.encode()))
    chunks = split(tokenize, text)
    assert tokenize.calls <= 50  # the old splitter: one per sentence, word or character
    sizes = [len(e.ids) for e in tokenize.tokenizer.encode_batch(chunks, add_special_tokens=False)]
    assert max(sizes) <= OPTIONS.size
    assert "".join("".join(chunks).split()) == "".join(text.split())  # nothing lost


def test_distinct_words_are_tokenized_once_each(tokenize: CountingTokenizer) -> None:
    words = [f"w{number}" for number in range(5_000)]
    split(tokenize, " ".join(words * 20))
    assert tokenize.calls <= len(words) + 10


def test_corpus_documents_chunk_exactly_as_whole_text_counts_would(
    tokenize: CountingTokenizer,
) -> None:
    from llama_index.core.node_parser import SentenceSplitter

    whole_texts = SentenceSplitter(
        chunk_size=200, chunk_overlap=30, tokenizer=tokenize.count, paragraph_separator="\n\n"
    )
    chunker = Chunker(ChunkingOptions(size=200, overlap=30), tokenize)
    files, _ = discover(CORPUS_DOCS)
    assert len(files) > 20
    for relative, path in files:
        document = read_document(Path(path), path.read_bytes())
        expected = [
            piece
            for section in document.sections
            for piece in whole_texts.split_text(section.text)
            if piece.strip()
        ]
        got = [chunk.text for chunk in chunker.split(relative, document, "0" * 64)]
        assert got == expected, relative
