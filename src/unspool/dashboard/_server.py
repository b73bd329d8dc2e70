"""The dashboard's HTTP server: a JSON API, a Server-Sent Events stream and the built UI.

Access rules (``Guard``):

* Bound to a loopback address, reads need no token, but the ``Host`` header must name a
  loopback host, so a web page of another site cannot reach the API through a DNS name that
  resolves to 127.0.0.1.
* Bound to any other address, every request (pages, assets, API, events) must carry the
  token: ``Authorization: Bearer T``, an ``X-Unspool-Token`` header, the ``unspool_token``
  cookie, or ``?token=T`` once (which sets the cookie).
* Requests that change something (POST: resume, trigger) need the token in a header on
  every bind, and an ``Origin`` header, when sent, equal to the server's own origin; so does
  a preview that unpickles (loading a pickle runs code). The page reads the token from a tag
  in index.html, which only a same-origin script can read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from .. import _dashboard_queries as q
from .._store_json import _finite, _json_default
from ._graph import build_graph
from ._preview import preview
from ._watch import Watcher

STATIC = Path(__file__).parent / "static"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOG_CHUNK = 256 * 1024
LOG_MAX_CHUNK = 4 * 1024 * 1024
NESTED_DEPTH = 2  # levels of child runs whose graphs are sent inside their node
NESTED_MAX_NODES = 40  # a child run with more nodes stays one node (open it for its own page)
NESTED_MAX_CHILDREN = 50  # child runs per level whose graphs are sent


class JSON(JSONResponse):
    """JSON that never fails on NaN, numpy scalars or other odd values in stored metadata."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, default=_json_default, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(json.loads(json.dumps(content, default=_json_default))), separators=(",", ":"))
        return text.encode()


class Guard:
    def __init__(self, token: str, *, loopback: bool) -> None:
        self.token = token
        self.loopback = loopback

    def _matches(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.token.encode())

    def presented(self, request: Request, *, headers_only: bool = False) -> bool:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self._matches(auth[7:].strip()):
            return True
        if self._matches(request.headers.get("x-unspool-token")):
            return True
        if headers_only:
            return False
        return self._matches(request.cookies.get("unspool_token")) or self._matches(request.query_params.get("token"))

    def check(self, request: Request) -> Response | None:
        """None when the request may go on, else the response refusing it."""
        host = _hostname(request.headers.get("host") or "")
        if self.loopback and host not in LOOPBACK_HOSTS:
            return JSON({"detail": f"host {host!r} is not this loopback dashboard"}, status_code=403)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if not self.presented(request, headers_only=True):
                return JSON({"detail": "this request needs the dashboard token (X-Unspool-Token header)"}, status_code=401)
            origin = request.headers.get("origin")
            if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
                return JSON({"detail": f"cross-origin request from {origin} refused"}, status_code=403)
            return None
        if self.loopback or self.presented(request):
            return None
        if request.url.path.startswith("/api/"):
            return JSON({"detail": "this dashboard needs its token: Authorization: Bearer TOKEN"}, status_code=401)
        return HTMLResponse(
            "<!doctype html><title>unspool dashboard</title><p>This dashboard needs its token: open the "
            "address <code>unspool dashboard</code> printed, which ends with <code>?token=...</code>.</p>",
            status_code=401,
        )


def create_app(store: Any, artifact_root: str, *, token: str, loopback: bool, static: Path = STATIC, reap: bool = True) -> FastAPI:
    """The dashboard application over one metadata store and artifact store."""
    from .._artifact_io import artifact_store_for

    guard = Guard(token, loopback=loopback)
    reaper = None
    if reap:
        from .._resume import reap_dead_runs

        def reaper() -> Any:
            return reap_dead_runs(store)

    watcher = Watcher(store, reap=reaper)
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        watcher.close()

    app = FastAPI(title="unspool dashboard", version="1", default_response_class=JSON, lifespan=lifespan)
    app.state.watcher = watcher
    app.state.store = store
    app.state.token = token
    app.state.should_stop = lambda: False  # serve() points it at the server's exit flag
    app.state.processes = []  # resumes started, for whoever wants to wait for them

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        refused = guard.check(request)
        if refused is not None:
            return refused
        token_in_query = request.query_params.get("token")
        if token_in_query and guard._matches(token_in_query) and request.method == "GET" and not request.url.path.startswith("/api/"):
            # a login link: remember the token in a cookie and drop it from the address
            response: Response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
        else:
            response = await call_next(request)
        if token_in_query and guard._matches(token_in_query):
            response.set_cookie("unspool_token", token, httponly=True, samesite="strict")
        return response

    def read() -> Any:
        return store.read()

    def artifacts() -> Any:
        return artifact_store_for(artifact_root)

    def run_or_404(conn: Any, run_id: str) -> dict[str, Any]:
        run = q.get_run(conn, run_id)
        if run is None:
            raise HTTPException(404, f"no pipeline run {run_id!r}")
        return run

    # -- runs ----------------------------------------------------------------------------------
    @app.get("/api/runs")
    def runs(
        pipeline: str | None = None, status: str | None = None, parent: str | None = None,
        all: bool = Query(False, description="include child runs"),
        limit: int = Query(50, ge=1, le=500), cursor: str | None = None,
    ) -> Any:
        with read() as conn:
            try:
                rows, next_cursor = q.list_runs(
                    conn, pipeline=pipeline, status=status, parent=parent, top_level=not all and not parent,
                    limit=limit, cursor=cursor,
                )
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
        for row in rows:
            row.pop("run_metadata", None)
            row["duration"] = _duration(row)
        return {"runs": rows, "next_cursor": next_cursor}

    @app.get("/api/pipelines")
    def pipelines() -> Any:
        with read() as conn:
            return {"pipelines": q.pipelines_seen(conn)}

    @app.get("/api/runs/{run_id}")
    def run_detail(run_id: str) -> Any:
        with read() as conn:
            run = run_or_404(conn, run_id)
            children = q.child_runs(conn, run["id"])
            counts = q.step_counts(conn, [run["id"], *[c["id"] for c in children]])
        run["step_counts"] = counts[run["id"]]
        run["duration"] = _duration(run)
        run["failed_steps"] = list((run.get("error") or {}).get("failed_steps") or [])
        run["budget"] = {
            "limits": (run.get("config") or {}).get("budget"),
            "used": (run.get("run_metadata") or {}).get("budget_used"),
        }
        for child in children:
            child.pop("run_metadata", None)
            child["step_counts"] = counts[child["id"]]
            child["duration"] = _duration(child)
        run["children"] = children
        run.pop("dag", None)
        return run

    finished_graphs: collections.OrderedDict[tuple[Any, ...], dict[str, Any]] = collections.OrderedDict()

    def graph_of(conn: Any, run_id: str, expand: set[str], depth: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A run's graph; each child run's node carries the child's own graph (``graph``: its
        nodes and edges, the same way down to ``depth`` levels) when it has at most
        ``NESTED_MAX_NODES`` nodes, so the page draws child runs as frames around their steps."""
        rows = q.graph_rows(conn, run_id)
        children = q.child_runs(conn, run_id)
        child_ids = [c["id"] for c in children]
        graph = build_graph(
            rows, expand=expand, children=children,
            child_counts=q.step_counts(conn, child_ids) if children else {},
            members=lambda key, first, last, limit: q.group_members(conn, run_id, key, first, last, limit),
            map_members=lambda: q.map_members(conn, run_id),
            owners=lambda ids: q.owners_of(conn, child_ids, ids),
            cross=q.inputs_from_runs(conn, run_id, child_ids) if child_ids else None,
        )
        if depth > 0:
            nodes = [n for n in graph["nodes"] if n["kind"] == "run"][:NESTED_MAX_CHILDREN]
            for node in nodes:
                inner, _ = graph_of(conn, node["run_id"], set(), depth - 1)
                if len(inner["nodes"]) <= NESTED_MAX_NODES:
                    node["graph"] = {"nodes": inner["nodes"], "edges": inner["edges"]}
        return graph, children

    @app.get("/api/runs/{run_id}/graph")
    def run_graph(run_id: str, expand: str = Query("", description="comma-separated group ids to send members of")) -> Any:
        started = time.perf_counter()
        with read() as conn:
            run = run_or_404(conn, run_id)
            key = (run["id"], expand, run["end_time"])  # a resumed run ends again, later
            if run["status"] in q.TERMINAL and key in finished_graphs:
                # a finished run's graph no longer changes (a resume makes it active again)
                finished_graphs.move_to_end(key)
                graph = dict(finished_graphs[key])
                graph["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
                graph["cached"] = True
                return graph
            graph, children = graph_of(conn, run["id"], {g for g in expand.split(",") if g}, NESTED_DEPTH)
        graph["run"] = {k: run[k] for k in ("id", "name", "pipeline_name", "status", "dynamic", "parent_run_id")}
        if run["status"] in q.TERMINAL and all(c["status"] in q.TERMINAL for c in children):
            finished_graphs[key] = graph
            while len(finished_graphs) > 16:
                finished_graphs.popitem(last=False)
        graph = dict(graph)
        graph["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return graph

    @app.get("/api/runs/{run_id}/steps")
    def run_steps(
        run_id: str, status: str | None = None, step_name: str | None = None,
        position_from: int | None = None, position_to: int | None = None, search: str | None = None,
        limit: int = Query(200, ge=1, le=10_000), cursor: str | None = None,
        map: str | None = Query(None, description="members of one map call (a group's first_invocation)"),
    ) -> Any:
        with read() as conn:
            run = run_or_404(conn, run_id)
            try:
                rows, next_cursor = q.list_steps(
                    conn, run["id"], status=status, step_name=step_name, position_from=position_from,
                    position_to=position_to, search=search, limit=limit, cursor=cursor, map_call=map,
                )
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
        return {"steps": rows, "next_cursor": next_cursor}

    @app.get("/api/runs/{run_id}/timeline")
    def run_timeline(run_id: str, limit: int = Query(2000, ge=1, le=20_000)) -> Any:
        """When each step ran and where (its runtime: inline threads, isolated processes),
        plus the run's orchestrator, for a Gantt view."""
        with read() as conn:
            run = run_or_404(conn, run_id)
            steps = q.timeline(conn, run["id"], limit + 1)
        orchestrator = (run.get("config") or {}).get("orchestrator") or {}
        kind = orchestrator.get("type") if isinstance(orchestrator, dict) else None
        for step in steps:
            isolated = step["runtime"] == "isolated"
            if kind == "process":
                step["executor"] = "process"
            elif kind == "ray":
                step["executor"] = "ray" if isolated or orchestrator.get("all_steps") else "thread"
            else:
                step["executor"] = "process" if isolated else "thread"
        return {"steps": steps[:limit], "truncated": len(steps) > limit, "orchestrator": kind or "local"}

    # -- steps ---------------------------------------------------------------------------------
    @app.get("/api/steps/{step_id}")
    def step_detail(step_id: str) -> Any:
        with read() as conn:
            step = q.get_step(conn, step_id)
            if step is None:
                raise HTTPException(404, f"no step run {step_id!r}")
            io = q.step_io(conn, step_id)
            origin = q.step_brief(conn, [step["original_step_run_id"]]) if step["original_step_run_id"] else {}
        step["inputs"] = [a for a in io if a["direction"] == "input"]
        step["outputs"] = [a for a in io if a["direction"] == "output"]
        step["cache_origin"] = next(iter(origin.values()), None)
        step["runtime"] = (step.get("config") or {}).get("runtime", "inline")
        step["duration"] = _duration(step)
        return step

    @app.get("/api/steps/{step_id}/logs")
    def step_logs(
        step_id: str, offset: int = Query(0, ge=-1), limit: int = Query(LOG_CHUNK, ge=1, le=LOG_MAX_CHUNK),
    ) -> Any:
        """``limit`` bytes of the step's log from ``offset`` (-1: the last ``limit`` bytes).
        Chunks end at a line end unless they reach the end of the file."""
        with read() as conn:
            step = q.get_step(conn, step_id)
        if step is None:
            raise HTTPException(404, f"no step run {step_id!r}")
        store = artifacts()
        uri = step["logs_uri"] or store.join(step["run_id"], step["invocation_id"]) + ".log"
        finished = step["status"] not in q.ACTIVE
        try:
            size = store.fs.size(uri)
        except (FileNotFoundError, OSError):
            return {"offset": 0, "next_offset": 0, "size": 0, "text": "", "finished": finished, "exists": False}
        if offset < 0:
            offset = max(0, size - limit)
        offset = min(offset, size)
        with store.open(uri, "rb") as f:
            f.seek(offset)
            data = f.read(min(limit, size - offset))
        if offset > 0 and data and offset + len(data) <= size:
            # started in the middle: drop the partial first line (unless the chunk is one line)
            cut = data.find(b"\n")
            if 0 <= cut < len(data) - 1 and offset_is_mid_line(store, uri, offset):
                offset += cut + 1
                data = data[cut + 1 :]
        end = offset + len(data)
        if end < size or not finished:
            cut = data.rfind(b"\n")
            if cut >= 0:
                data = data[: cut + 1]
                end = offset + len(data)
        return {
            "offset": offset, "next_offset": end, "size": size, "text": data.decode(errors="replace"),
            "finished": finished and end >= size, "exists": True,
        }

    # -- artifacts -----------------------------------------------------------------------------
    @app.get("/api/artifacts")
    def artifact_list(search: str | None = None, limit: int = Query(200, ge=1, le=1000), cursor: str | None = None) -> Any:
        with read() as conn:
            rows, next_cursor = q.list_artifacts(conn, search=search, limit=limit, cursor=cursor)
        return {"artifacts": rows, "next_cursor": next_cursor}

    @app.get("/api/artifacts/{name:path}/versions")
    def artifact_version_list(name: str, limit: int = Query(200, ge=1, le=1000), cursor: str | None = None) -> Any:
        with read() as conn:
            rows, next_cursor = q.artifact_versions_of(conn, name, limit=limit, cursor=cursor)
        if not rows and cursor is None:
            raise HTTPException(404, f"no artifact named {name!r}")
        return {"versions": rows, "next_cursor": next_cursor}

    @app.get("/api/artifact-versions/{version_id}")
    def artifact_version(version_id: str) -> Any:
        with read() as conn:
            version = q.get_artifact_version(conn, version_id)
            if version is None:
                raise HTTPException(404, f"no artifact version {version_id!r}")
            producer_id = version["producer_step_run_id"]
            producer = q.step_brief(conn, [producer_id]).get(producer_id) if producer_id else None
            consumers = q.consumers_of(conn, version_id)
            upstream = q.artifacts_of_steps(conn, [producer_id], "input") if producer_id else []
            downstream = q.artifacts_of_steps(conn, [c["id"] for c in consumers[:200]], "output")
        version["producer"] = producer
        version["consumers"] = consumers
        version["lineage"] = {"upstream": upstream, "downstream": downstream}
        return version

    @app.get("/api/artifact-versions/{version_id}/preview")
    def artifact_preview(
        request: Request, version_id: str,
        unpickle: bool = Query(False, description="load pickled data (runs code from the artifact store)"),
        max_rows: int = Query(100, ge=1, le=1000), max_bytes: int = Query(1_000_000, ge=1, le=1_000_000),
    ) -> Any:
        if unpickle and not guard.presented(request, headers_only=True):
            # loading a pickle runs code: like a POST, it needs the token in a header on every
            # bind, which a page of another site cannot send
            raise HTTPException(401, "unpickling needs the dashboard token (X-Unspool-Token header)")
        with read() as conn:
            version = q.get_artifact_version(conn, version_id)
        if version is None:
            raise HTTPException(404, f"no artifact version {version_id!r}")
        return preview(artifacts(), version, unpickle=unpickle, max_rows=max_rows, max_bytes=max_bytes)

    # -- actions -------------------------------------------------------------------------------
    @app.post("/api/runs/{run_id}/resume", status_code=202)
    def resume(run_id: str) -> Any:
        with read() as conn:
            run = run_or_404(conn, run_id)
        if run["status"] not in ("failed", "stopped"):
            raise HTTPException(409, f"run {run['name']} is {run['status']}; only failed or stopped runs resume")
        env = dict(os.environ, UNSPOOL_STORE_URL=store.url, UNSPOOL_ARTIFACT_STORE=artifact_root, UNSPOOL_PROGRESS="off")
        app.state.processes.append(subprocess.Popen(
            [sys.executable, "-m", "unspool", "runs", "resume", run["id"]], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))
        return {"run_id": run["id"], "status": "resuming"}

    @app.post("/api/snapshots/{snapshot_id}/trigger", status_code=202)
    async def trigger(snapshot_id: str, request: Request) -> Any:
        body: dict[str, Any] = {}
        raw = await request.body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                raise HTTPException(400, "the body must be JSON: {\"parameters\": {...}}") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        run_configuration = body.get("run_configuration") or {}
        if body.get("parameters"):
            run_configuration = {**run_configuration, "parameters": body["parameters"]}

        def start() -> Any:
            from .._client import Client
            from .._errors import NotFoundError, UnspoolError

            try:
                return Client().trigger_pipeline(snapshot_id, run_configuration=run_configuration, wait=False)
            except NotFoundError as exc:
                raise HTTPException(404, str(exc)) from None
            except UnspoolError as exc:
                raise HTTPException(400, str(exc)) from None

        run = await asyncio.to_thread(start)
        return {"run_id": run.id, "name": run.name, "status": run.status.value}

    # -- events --------------------------------------------------------------------------------
    @app.get("/api/events")
    async def events(request: Request, run: str | None = None) -> Any:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()

        def deliver(batch: list[dict[str, Any]]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, batch)

        unsubscribe = watcher.subscribe(deliver)

        def wanted(event: dict[str, Any]) -> bool:
            if run is None or event.get("kind") == "error":
                return True
            return run in watcher.root_of(event.get("run_id") or event.get("id") or "")

        async def stream() -> Any:
            try:
                yield "retry: 1000\n: connected\n\n"
                quiet = 0.0
                while not app.state.should_stop():
                    try:
                        batch = await asyncio.wait_for(queue.get(), timeout=0.5)
                    except asyncio.TimeoutError:
                        quiet += 0.5
                        if quiet >= 10:
                            quiet = 0.0
                            if await request.is_disconnected():
                                return
                            yield ": keep-alive\n\n"
                        continue
                    quiet = 0.0
                    chosen = [e for e in batch if wanted(e)]
                    if chosen:
                        data = json.dumps(chosen, default=_json_default, separators=(",", ":"))
                        yield f"event: changes\ndata: {data}\n\n"
            finally:
                unsubscribe()

        return StreamingResponse(
            stream(), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -- the UI --------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Any:
        page = static / "index.html"
        if not page.exists():
            return HTMLResponse(
                "<!doctype html><title>unspool dashboard</title><p>The dashboard's UI is not built in "
                "this installation; the API is at <a href='/docs'>/docs</a>.</p>", status_code=200,
            )
        html = page.read_text()
        meta = f'<meta name="unspool-token" content="{token}">'
        return HTMLResponse(html.replace("<head>", "<head>" + meta, 1), headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Any:
        return Response(status_code=204)

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Any:
        path = (static / "assets" / name).resolve()
        if path.parent != (static / "assets").resolve() or not path.is_file():
            raise HTTPException(404, "no such asset")
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".map": "application/json"}
        return Response(
            path.read_bytes(), media_type=types.get(path.suffix, "application/octet-stream"),
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    return app


def _hostname(host: str) -> str:
    """The name in a Host header, without its port ("[::1]:8237" -> "[::1]")."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def offset_is_mid_line(store: Any, uri: str, offset: int) -> bool:
    with store.open(uri, "rb") as f:
        f.seek(offset - 1)
        return f.read(1) != b"\n"


def _duration(row: dict[str, Any]) -> float | None:
    start, end = row.get("start_time"), row.get("end_time")
    if start is None:
        return None
    if end is None:
        return round(time.time() - start, 3) if row.get("status") in q.ACTIVE else None
    return round(end - start, 3)
