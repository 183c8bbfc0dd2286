"""One model, one request at a time: a single worker thread decodes, the event loop relays its output.

Requests queue in the worker's executor; a request whose client went away is skipped when its turn comes, or
stopped at the next token, so a dropped connection never holds the model.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cloister.errors import InvalidRequest

from .decode import Completion, Decoding, generate, prompt_ids
from .model import Loaded


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


class Worker:
    """Serialises decoding on one thread; :meth:`run` yields text deltas, then the :class:`Completion`."""

    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-engine")

    def _produce(
        self,
        messages: Sequence[dict[str, str]],
        decoding: Decoding,
        cancelled: threading.Event,
        put: Callable[[object], None],
    ) -> None:
        try:
            if cancelled.is_set():
                return
            prompt = prompt_ids(self.loaded, messages)
            if len(prompt) + decoding.max_tokens > self.loaded.context:
                raise InvalidRequest(
                    f"the prompt has {len(prompt)} tokens and max_tokens is {decoding.max_tokens}, more than this "
                    f"model's context of {self.loaded.context} tokens; shorten the messages or lower max_tokens",
                    param="messages",
                )
            for item in generate(self.loaded, prompt, decoding, cancelled.is_set):
                put(item)
        except BaseException as exc:  # handed to the request that caused it, never lost in the thread
            put(_Failed(exc))
        finally:
            put(_END)

    async def run(self, messages: Sequence[dict[str, str]], decoding: Decoding) -> AsyncGenerator[str | Completion]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        loop.run_in_executor(self._executor, self._produce, messages, decoding, cancelled, put)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, _Failed):
                    raise item.error
                assert isinstance(item, str | Completion)
                yield item
        finally:
            cancelled.set()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
