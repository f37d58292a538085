"""A small Velithon app: JSON hello, a path parameter, a streaming route, a websocket echo.

Run it with our server (from the project folder)::

    velithon run examples.hello:app

or ``python examples/hello.py`` (the same server, through ``velithon.server.serve``,
on http://127.0.0.1:8000). Then::

    curl http://127.0.0.1:8000/
    curl http://127.0.0.1:8000/users/42?verbose=1
    curl -N http://127.0.0.1:8000/countdown/5
    # and any websocket client on ws://127.0.0.1:8000/ws/echo
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from velithon import Request, StreamingResponse, Velithon, WebSocket

app = Velithon()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"message": "Hello, World!"}


@app.get("/users/{user_id:int}")
async def user(user_id: int, request: Request) -> dict[str, object]:
    return {"id": user_id, "verbose": request.query_params.get("verbose") == "1"}


@app.get("/countdown/{n:int}")
async def countdown(n: int) -> StreamingResponse:
    async def ticks() -> AsyncIterator[str]:
        for i in range(n, 0, -1):
            yield f"{i}\n"
            await trio.sleep(1)
        yield "liftoff\n"
    return StreamingResponse(ticks(), media_type="text/plain")


@app.websocket("/ws/echo")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)


if __name__ == "__main__":
    from velithon.server import serve

    serve(app, host="127.0.0.1", port=8000)
