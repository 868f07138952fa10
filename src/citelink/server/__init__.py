"""The server process: the Starlette app, uvicorn, and `citelink serve`.

- `app`: the app and its per-process state (pool, relay, background work);
- `uvicorn_server`: uvicorn's configuration, the port, start and stop;
- `connection_guards`: HTTP and WebSocket limits uvicorn lacks;
- `serving`, `workers`: `citelink serve`, in one process or N workers;
- `health`, `scrape`: /healthz, /readyz and /metrics;
- `logs`: text or JSON lines, request ids, tokens never logged.
"""
