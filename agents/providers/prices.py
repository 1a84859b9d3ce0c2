"""List prices of well-known hosted models, to put a dollar figure on each call.

Prices are US dollars per million tokens (input, output), standard tier, no
batch or prompt-cache discounts. Two sources, first match wins:

1. ``PRICES``: OpenAI and Anthropic models as those vendors publish them
   (platform.claude.com/docs/about-claude/pricing) on ``PRICES_AS_OF``.
2. ``price_map.json`` (shipped data, ``PRICE_MAP_FILE``): Together, Groq, Gemini and
   Bedrock models, taken from LiteLLM's maintained price map on the date and at the
   commit the file names (its ``source`` field). Those figures are LiteLLM's, not read
   from the vendors' own pages (not reachable offline). An OpenAI-compatible endpoint
   is matched to its vendor by the host of its ``base_url`` (api.together.xyz,
   api.groq.com, generativelanguage.googleapis.com, *bedrock*.amazonaws.com); without
   a base URL a model id counts only when every vendor that lists it agrees on the
   price (``openai/gpt-oss-20b`` costs differently on Groq and Together).

They drift: a pool file can override them per provider with
``price_in_per_mtok`` / ``price_out_per_mtok``. A model in neither costs
0 with ``cost_known`` False, so reports can say "cost unknown" instead of
pretending a call was free.

Model ids carry snapshot suffixes ("gpt-4o-2024-08-06", "gpt-4-0613",
"claude-3-5-sonnet-20241022", "-latest"), so an id matches a table entry when it
is that entry plus such a suffix. Anything else is another model: "gpt-4o-mini"
is not "gpt-4o", and "claude-opus-4-7" is not "claude-opus-4" (whose price it
does not have), so an unlisted newer version reads as unknown, never mispriced.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlparse

PRICES_AS_OF = "2026-02"
PRICE_MAP_FILE = "price_map.json"
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


@functools.cache
def price_map() -> dict[str, Any]:
    """The shipped fallback map (see the module docstring)."""
    text = resources.files(__package__).joinpath(PRICE_MAP_FILE).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def vendor_of(base_url: str | None) -> str | None:
    """The price map's vendor serving ``base_url``, by host; None for any other host."""
    if not base_url:
        return None
    host = (urlparse(base_url).hostname or "").lower()
    for name, vendor in price_map()["vendors"].items():
        for suffix in vendor["hosts"]:
            on_host = host == suffix or host.endswith("." + suffix)
            if on_host and (name != "bedrock" or "bedrock" in host):
                return name
    return None


def mapped_price(model: str, base_url: str | None = None) -> Price | None:
    """The fallback map's price of ``model`` at ``base_url``'s vendor (module docstring)."""
    vendors = price_map()["vendors"]
    vendor = vendor_of(base_url)
    if vendor is not None:
        entry = vendors[vendor]["models"].get(model)
        return None if entry is None else Price(*entry)
    if base_url:
        return None  # another server: its prices are its own
    found = {tuple(v["models"][model]) for v in vendors.values() if model in v["models"]}
    return Price(*found.pop()) if len(found) == 1 else None


def price_for(model: str, base_url: str | None = None) -> Price | None:
    """The price of ``model`` (snapshot suffixes allowed for the vendor table), from the
    vendor table, else the fallback map; None when unknown."""
    if model in PRICES:
        return PRICES[model]
    match = SNAPSHOT_SUFFIX.search(model)
    while match is not None:
        base = model[: match.start()]
        if base in PRICES and SNAPSHOT_SUFFIX.fullmatch(model[match.start() :]):
            return PRICES[base]
        match = SNAPSHOT_SUFFIX.search(model, match.start() + 1)
    return mapped_price(model, base_url)
