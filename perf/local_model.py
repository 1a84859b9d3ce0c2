"""Generation speed of the embedded model: completion tokens per second on N threads.

Starts the SmolLM2 server the way agents use it (llama.cpp over HTTP), sends
one warm-up request, then ``--runs`` long generations of up to ``--max-tokens``
tokens through the ``local`` provider, one at a time. ``tokens_per_s`` is the
completion tokens of all runs divided by their summed call time (prompt
processing and the HTTP round trip included, so it slightly understates the
decoder's raw speed). ``load_s`` is process start to the first answer of
/v1/models. Target: >= 80 tokens/s on 2 threads.

The figure depends heavily on what else runs: llama.cpp's two threads meet at
a barrier hundreds of times per token, so when other processes compete for the
two cores a run can drop from ~100 to a few tokens/s (see ``local.py``). The
JSON therefore carries the 1-minute load average and the per-run figures; quote
a run taken on a quiet machine, and compare ``--threads 1`` on a busy one.

    python perf/local_model.py --json [--threads 2] [--runs 5] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import os

import anyio

from itas.agents.providers.local import MODEL_ALIAS, LocalProvider, local_model_server

PROMPTS = (
    "Write a long, detailed story about a lighthouse keeper who finds a map.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a day in the life of a honeybee, hour by hour.",
    "Write a long letter from a sailor to his family about his voyage.",
    "Explain step by step how bread is made, from wheat to loaf.",
    "Tell a long fairy tale about a fox and a clever crow.",
)
TARGET_TOKENS_PER_S = 80.0


async def measure(threads: int, runs: int, max_tokens: int) -> dict[str, object]:
    async with local_model_server(port=0, threads=threads) as server:
        provider = LocalProvider({"base_url": server.base_url})
        try:
            await provider.complete(
                [{"role": "user", "content": "Say hello."}], model=MODEL_ALIAS, max_tokens=16
            )
            per_run = []
            for i in range(runs):
                result = await provider.complete(
                    [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    model=MODEL_ALIAS,
                    temperature=0.8,
                    max_tokens=max_tokens,
                    sample_index=i,
                )
                per_run.append((result.usage.completion_tokens, result.usage.latency_s))
        finally:
            await provider.aclose()
    tokens = sum(n for n, _ in per_run)
    seconds = sum(s for _, s in per_run)
    return {
        "benchmark": "local_model",
        "model": MODEL_ALIAS,
        "tokens_per_s": round(tokens / seconds, 1),
        "target_tokens_per_s": TARGET_TOKENS_PER_S,
        "load_s": round(server.load_s, 2),
        "n_threads": threads,
        "runs": runs,
        "completion_tokens": tokens,
        "generation_s": round(seconds, 2),
        "per_run_tokens_per_s": [round(n / s, 1) for n, s in per_run],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    result = anyio.run(measure, args.threads, args.runs, args.max_tokens)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
