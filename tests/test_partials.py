"""The agent side of partial replies: text deltas joined per interval, split to fit the
wire's limit, flushed in order before the reply; nothing to send outside a streaming request."""

from __future__ import annotations

import anyio
import pytest

from itas import protocol as P
from itas.agents import partials
from itas.agents.partials import MAX_DELTA_CHARS, PartialSink

pytestmark = pytest.mark.anyio


async def test_deltas_are_joined_within_the_interval_and_all_arrive_in_order() -> None:
    sent: list[dict] = []

    async def send(data: bytes) -> None:
        assert len(data) <= P.MAX_PARTIAL_BYTES
        sent.append(P.unpack(data))

    sink = PartialSink(send, interval_s=0.05)
    words = [f"w{i} " for i in range(200)]
    for word in words[:100]:
        await sink.text(word)  # within one interval: the first goes at once, the rest wait
    await anyio.sleep(0.06)
    for word in words[100:]:
        await sink.text(word)
    await sink.event({"progress": {"layer": 1}})
    await sink.flush()
    texts = [m["delta"] for m in sent if "delta" in m]
    assert "".join(texts) == "".join(words)
    assert len(texts) <= 4  # 200 deltas, two intervals: a handful of messages
    assert sent[-1] == {"progress": {"layer": 1}}  # after the text that waited


async def test_long_text_is_split_to_fit_the_wire_limit() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    sink = PartialSink(send)
    text = "é" * (3 * MAX_DELTA_CHARS + 5)  # two bytes each in UTF-8
    await sink.text(text)
    await sink.flush()
    assert all(len(d) <= P.MAX_PARTIAL_BYTES for d in sent) and len(sent) == 4
    assert "".join(P.unpack(d)["delta"] for d in sent) == text


async def test_the_sink_is_current_only_inside_its_request() -> None:
    assert partials.current() is None

    async def send(data: bytes) -> None:
        pass

    sink = PartialSink(send)
    token = sink.activate()
    try:
        assert partials.current() is sink
        async with anyio.create_task_group() as tg:  # tasks started inside inherit it
            tg.start_soon(lambda: _expect(sink))
    finally:
        PartialSink.deactivate(token)
    assert partials.current() is None


async def _expect(sink: PartialSink) -> None:
    assert partials.current() is sink
