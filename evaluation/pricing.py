"""The price table: cost per 1,000 calls from tokens per call, hosted or self-hosted."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")


def call_cost(prompt_tokens: float, completion_tokens: float, price: tuple[float, float]) -> float:
    """Dollars for one call, at `price` = (input, output) US dollars per million tokens."""
    price_in, price_out = price
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000


class TokenPrices(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)

    def per_call(self, prompt_tokens: float, completion_tokens: float) -> float:
        """Dollars for one call of that many tokens."""
        return call_cost(prompt_tokens, completion_tokens, self.per_million)

    @property
    def per_million(self) -> tuple[float, float]:
        """(input, output) US dollars per million tokens."""
        return (self.input_per_million, self.output_per_million)


class Hosted(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base: TokenPrices
    fine_tuned: TokenPrices


class SelfHosted(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_hour: float = Field(ge=0)


class PriceTable(BaseModel):
    """Hosted base vs fine-tuned token prices, and a self-hosted GPU-hour."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosted: Hosted
    self_hosted: SelfHosted

    @classmethod
    def load(cls, path: Path = DEFAULT_PRICES) -> PriceTable:
        """Reads a price table file."""
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))

    def hosted_per_1k(
        self, prompt_tokens: float, completion_tokens: float, fine_tuned: bool
    ) -> float:
        """Dollars per 1,000 calls at hosted prices (fine-tuned prices for adapter rungs)."""
        prices = self.hosted.fine_tuned if fine_tuned else self.hosted.base
        return 1000 * prices.per_call(prompt_tokens, completion_tokens)

    def self_hosted_per_1k(self, seconds_per_call: float) -> float:
        """Dollars per 1,000 calls on one GPU at the measured sequential throughput."""
        return self.self_hosted.gpu_hour * seconds_per_call * 1000 / 3600


def hosted_prices() -> dict[str, tuple[float, float]]:
    """Hosted base and fine-tuned (input, output) prices per million tokens from the price table."""
    hosted = PriceTable.load().hosted
    return {"base": hosted.base.per_million, "adapter": hosted.fine_tuned.per_million}
