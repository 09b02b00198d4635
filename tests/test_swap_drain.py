"""A swap (a rollback, say) does not wait for the requests still running on the old model: they finish on it."""

from __future__ import annotations

import asyncio
import time
import weakref

from learnstream.registry import Registry
from serving.holders import ModelHolder
from tests.test_registry import LoadedModel, commit

LONG_REQUEST_S = 3.0


async def test_a_swap_during_a_long_request_is_prompt_and_the_request_finishes_on_the_old_model(tmp_path) -> None:
    registry = Registry(tmp_path / "registry")
    commit(registry), commit(registry)  # versions 0 and 1
    holder = ModelHolder("chat", registry, load=LoadedModel)
    try:
        assert await holder.swap_to(0)
        started = asyncio.Event()

        async def long_request() -> int:
            model = holder.current.model  # taken once at its start, as the routes do
            started.set()
            await asyncio.sleep(LONG_REQUEST_S)
            return model.number

        request = asyncio.create_task(long_request())
        await started.wait()
        old = weakref.ref(holder.current.model)
        before = time.monotonic()
        assert await holder.swap_to(1)
        assert time.monotonic() - before < LONG_REQUEST_S / 2 and holder.version == 1
        assert not request.done() and old() is not None  # the old model stays while its request runs
        assert await holder.swap_to(0)  # a rollback at once, the first old model still draining
        assert holder.version == 0 and not request.done()
        assert await request == 0
        await holder.released()
        assert old() is None
    finally:
        holder.close()
