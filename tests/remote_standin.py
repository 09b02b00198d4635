"""A local stand-in for an OpenAI-compatible chat-completions API (as Groq offers), for tests and benches.

The real remote API cannot be reached from here. The stand-in answers POST /chat/completions on 127.0.0.1 and
a free port, checks the bearer key, records what it received, and can be told to fail or to be slow:

    async with RemoteStandin() as standin:
        standin.behaviour.fail_status = 503       # every request now fails
        ... RemoteSettings(base_url=standin.base_url, api_key=standin.api_key, model=standin.model) ...

    python tests/remote_standin.py [--port 0] [--delay 0.05]   serves until interrupted, prints the base URL;
                                                               the bearer key is "standin-key"
"""

import argparse
import asyncio
import re
import time
from dataclasses import dataclass
from itertools import count

from aiohttp import web


@dataclass
class StandinBehaviour:
    fail_status: int | None = None  # answer every request with this HTTP error status
    delay_seconds: float = 0.0  # wait this long before answering (slow-remote and timeout tests)
    reply: str = "That sounds like a lot to carry. Would you like to tell me more?"  # never echoes user text
    echo_placeholders: bool = False  # append the placeholders ("[PERSON_3f2a]") of the last user turn to the reply


class RemoteStandin:
    def __init__(self, *, api_key: str = "standin-key", model: str = "standin-model", port: int = 0) -> None:
        self.api_key = api_key
        self.model = model
        self.behaviour = StandinBehaviour()
        self.received: list[dict] = []  # request bodies, oldest first
        self._port = port
        self._ids = count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "RemoteStandin":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _completions(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        body = await request.json()
        self.received.append(body)
        if self.behaviour.delay_seconds:
            await asyncio.sleep(self.behaviour.delay_seconds)
        if self.behaviour.fail_status is not None:
            return web.json_response({"error": {"message": "stand-in failure"}}, status=self.behaviour.fail_status)
        content = self.behaviour.reply
        if self.behaviour.echo_placeholders:
            last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
            content += " " + " ".join(re.findall(r"\[[A-Z_]+_[0-9a-f]{4}\]", last_user))
        return web.json_response(
            {
                "id": f"chatcmpl-standin-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )


async def _serve(port: int, delay_seconds: float) -> None:
    async with RemoteStandin(port=port) as standin:
        standin.behaviour.delay_seconds = delay_seconds
        print(standin.base_url, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each answer")
    arguments = parser.parse_args()
    try:
        asyncio.run(_serve(arguments.port, arguments.delay))
    except KeyboardInterrupt:
        pass
