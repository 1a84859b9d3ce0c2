"""List prices of well-known hosted models, to put a dollar figure on each call.

Prices are US dollars per million tokens (input, output), standard tier, no
batch or prompt-cache discounts, as published by OpenAI and Anthropic
(platform.claude.com/docs/about-claude/pricing) on ``PRICES_AS_OF``. They drift: a pool file can override them per provider with
``price_in_per_mtok`` / ``price_out_per_mtok``. A model not in the table costs
0 with ``cost_known`` False, so reports can say "cost unknown" instead of
pretending a call was free.

Model ids carry snapshot suffixes ("gpt-4o-2024-08-06", "gpt-4-0613",
"claude-3-5-sonnet-20241022", "-latest"), so an id matches a table entry when it
is that entry plus such a suffix. Anything else is another model: "gpt-4o-mini"
is not "gpt-4o", and "claude-opus-4-7" is not "claude-opus-4" (whose price it
does not have), so an unlisted newer version reads as unknown, never mispriced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRICES_AS_OF = "2026-02"
PER_MTOK = 1_000_000
SNAPSHOT_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|\d{4}|latest)")


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / PER_MTOK


PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.40),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4o": Price(2.50, 10.0),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4-turbo": Price(10.0, 30.0),
    "gpt-4": Price(30.0, 60.0),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "o1": Price(15.0, 60.0),
    "o1-mini": Price(1.10, 4.40),
    "o3": Price(2.0, 8.0),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    # Anthropic
    "claude-opus-4-6": Price(5.0, 25.0),
    "claude-sonnet-4-6": Price(3.0, 15.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-3-5-sonnet": Price(3.0, 15.0),
    "claude-3-5-haiku": Price(0.80, 4.0),
    "claude-3-opus": Price(15.0, 75.0),
    "claude-3-sonnet": Price(3.0, 15.0),
    "claude-3-haiku": Price(0.25, 1.25),
}


def price_for(model: str) -> Price | None:
    """The table price of ``model`` (snapshot suffixes allowed), or None when unknown."""
    if model in PRICES:
        return PRICES[model]
    match = SNAPSHOT_SUFFIX.search(model)
    while match is not None:
        base = model[: match.start()]
        if base in PRICES and SNAPSHOT_SUFFIX.fullmatch(model[match.start() :]):
            return PRICES[base]
        match = SNAPSHOT_SUFFIX.search(model, match.start() + 1)
    return None
