"""``unspool dashboard``: a web UI and JSON API over the stores.

Importing ``unspool`` never imports this package's server (FastAPI, uvicorn): ``serve`` and
``create_app`` import them when called.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8237


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(store: Any, artifact_root: str, *, token: str | None = None, loopback: bool = True, **kwargs: Any) -> Any:
    from ._server import create_app as _create

    return _create(store, artifact_root, token=token or secrets.token_urlsafe(24), loopback=loopback, **kwargs)


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, *, echo: Any = print) -> None:
    """Serve the dashboard over the current project's stores until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - an installation without the extra
        from .._errors import UnspoolError

        raise UnspoolError(
            f"the dashboard needs FastAPI and uvicorn ({exc}); install them with: pip install 'unspool[dashboard]'"
        ) from None
    from .._metadata_store import redact
    from .._stores import open_stores

    env = open_stores()
    loopback = is_loopback(host)
    generated = False
    if token is None:
        token = secrets.token_urlsafe(24)
        generated = not loopback
    app = create_app(env.metadata, env.artifact_root, token=token, loopback=loopback)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if loopback:
        echo(f"unspool dashboard: {url}")
    else:
        if generated:
            echo(f"unspool dashboard token (shown once): {token}")
        echo(f"unspool dashboard: {url}?token={token}" if generated else f"unspool dashboard: {url} (token required)")
    echo(f"store: {redact(env.metadata.url)}  artifacts: {env.artifact_root}  (Ctrl+C stops)")
    sys.stdout.flush()
    config = uvicorn.Config(
        app, host=host.strip("[]"), port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    app.state.should_stop = lambda: server.should_exit  # event streams end when the server stops
    server.run()
