"""Prompt token counts composed from cached counts of their parts, so trimming never re-tokenises
the whole prompt.

A prompt's count is its first message's count alone plus what each further message adds (its
count after a fixed first message, less that message's); a message carrying sources adds its
empty self plus each piece of its content: the fence, one piece per source, the question. Every
part is counted once through the engine's own counter and kept by a hash of its text. The sum is
exact when the chat template renders each message on its own between special tokens and the
pieces meet where the tokenizer's pre-tokenizer splits anyway (tested against SmolLM2's and a
Qwen2 tokenizer over many prompts); the plan still counts its final prompt whole once, so a
composition that under-counts can never overflow the window.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from service.messages import ChatMessage

TokenCounter = Callable[[Sequence[ChatMessage]], int]

_FIRST = ChatMessage("system", "a")
"""A fixed first message: what a later message adds is measured after it, so a template's
first-message framing (SmolLM2's default system turn) is never counted twice."""
_LEAD = "a"
"""Text a piece is measured after: a letter, where no piece starts with one (pieces start with
the fence, a newline or a quote), so the tokenizer splits between them as it does in place."""


@dataclass(frozen=True)
class Sourced:
    """The user message that carries the sources: the message as the client sent it, and the
    pieces its content becomes (joined, they are the final content)."""

    message: ChatMessage
    pieces: tuple[str, ...]

    def final(self) -> ChatMessage:
        """The message with its sources in place."""
        return replace(self.message, content="".join(self.pieces))


Part = ChatMessage | Sourced


def messages_of(parts: Sequence[Part]) -> tuple[ChatMessage, ...]:
    """The final messages."""
    return tuple(part.final() if isinstance(part, Sourced) else part for part in parts)


class TokenParts:
    """Counts of prompt parts through one token counter, kept in an LRU of `size` entries (0
    keeps none: every part is counted each time, still never a whole prompt per trim step).
    Thread-safe."""

    def __init__(self, count: TokenCounter, size: int = 4096) -> None:
        self.count = count
        self.size = size
        self._counts: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self._lock = threading.Lock()

    def whole(self, messages: Sequence[ChatMessage]) -> int:
        """The counter's own count of a whole prompt."""
        return self.count(messages)

    def total(self, parts: Sequence[Part]) -> int:
        """The prompt's count, composed from its parts' counts."""
        if not parts:
            return self._cached("none", "", lambda: self.count([]))
        first, *rest = parts
        return self._part(first, self.first) + sum(self._part(part, self.added) for part in rest)

    def first(self, message: ChatMessage) -> int:
        """A prompt of this message alone."""
        return self._cached("first", _key(message), lambda: self.count([message]))

    def added(self, message: ChatMessage) -> int:
        """What a message adds after the first one."""
        return self._cached(
            "added", _key(message), lambda: self.count([_FIRST, message]) - self._alone()
        )

    def piece(self, text: str) -> int:
        """What a piece of a user message's content adds to it."""
        return self._cached("piece", text, lambda: self._after_lead(_LEAD + text) - self._lead())

    def _part(self, part: Part, counted: Callable[[ChatMessage], int]) -> int:
        if isinstance(part, Sourced):
            empty = replace(part.message, content="")
            return counted(empty) + sum(self.piece(text) for text in part.pieces)
        return counted(part)

    def _alone(self) -> int:
        return self._cached("alone", "", lambda: self.count([_FIRST]))

    def _lead(self) -> int:
        return self._cached("lead", "", lambda: self._after_lead(_LEAD))

    def _after_lead(self, content: str) -> int:
        return self.count([_FIRST, ChatMessage("user", content)])

    def _cached(self, kind: str, text: str, counted: Callable[[], int]) -> int:
        # A digest, not the text, is kept: parts may be kilobytes each.
        key = (kind, hashlib.blake2b(text.encode(), digest_size=16).digest())
        with self._lock:
            found = self._counts.get(key)
            if found is not None:
                self._counts.move_to_end(key)
                return found
        value = counted()
        if self.size > 0:
            with self._lock:
                self._counts[key] = value
                while len(self._counts) > self.size:
                    self._counts.popitem(last=False)
        return value


def _key(message: ChatMessage) -> str:
    """Everything of a message a template may render, as one string."""
    calls = "\0".join(f"{c.id}\0{c.name}\0{c.arguments}" for c in message.tool_calls)
    return f"{message.role}\0{message.tool_call_id or ''}\0{calls}\0{message.content}"
