"""Dashboard benchmark (issue 14's targets), in a fresh store, against the real server.

    .venv/bin/python bench/dashboard.py [--steps 100000] [--nodes 10000] [--no-browser]

What it measures, and how:

* **graph API**: ``GET /api/runs/{id}/graph`` of a real run unspool executes first:
  ``gather(bump.map(seed(N)))`` with N = ``--steps`` (so the map group comes from the
  engine's marker and ``gather`` has N upstream ids), median and max of 5 requests over
  HTTP, each with a new expansion key so none is answered from the finished-run cache; and
  the same with the group expanded (its first 50,000 members sent as cells).
* **live (server)**: from a step's status change being committed by another connection to
  its event arriving on ``/api/events``: p50 and p95 over 30 changes.
* **browser** (headless Chromium, when installed): the page of a graph of ``--nodes``
  distinct steps (no folding) until it is drawn and interactive (``first view``), main-thread
  tasks over 50 ms (Long Tasks API) over the whole load and while the graph is laid out and
  drawn (between the page's ``unspool:graph-fetched`` and ``unspool:graph-drawn`` marks; the
  WebGL context's creation comes before), frames per second while panning an
  expanded group of 20,000 member cells, and from a status change being committed to the
  node's colour changing on the page (p95).

Results print as one table and are written to ``bench/results/dashboard-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "tests"))


def fill(store: Any, run_name: str, steps: list[tuple[str, str, list[str]]], status: str = "completed") -> str:
    """A run row and its step rows: (invocation id, step name, upstream ids) in order; steps
    named ``bump`` carry the marker the engine records on the members of one map call."""
    from unspool._metadata_store import pipeline_runs, step_runs

    run_id = uuid.uuid4().hex
    now = time.time()
    with store.write() as conn:
        conn.execute(pipeline_runs.insert(), [{
            "id": run_id, "name": run_name, "pipeline_name": "bench", "status": "running" if status == "running" else "completed",
            "dynamic": True, "parent_run_id": None, "invocation_id": None, "parameters": {}, "config": {},
            "dag": None, "error": None, "run_metadata": {}, "orchestrator": "bench:0", "heartbeat": now + 3600,
            "snapshot_id": None, "start_time": now, "end_time": None if status == "running" else now + 1, "created_at": now,
        }])
        rows = []
        for i, (inv, name, upstream) in enumerate(steps):
            rows.append({
                "id": uuid.uuid4().hex, "run_id": run_id, "invocation_id": inv, "position": i, "step_name": name,
                "status": status, "parameters": {}, "config": {"map": "bump"} if name == "bump" else {}, "upstream": upstream, "cache_key": None,
                "original_step_run_id": None, "error": None, "attempts": [], "step_metadata": {}, "logs_uri": None,
                "start_time": now, "end_time": None if status == "running" else now + 0.5,
            })
            if len(rows) == 20_000:
                conn.execute(step_runs.insert(), rows)
                rows = []
        if rows:
            conn.execute(step_runs.insert(), rows)
    return run_id


def real_map_run(n: int) -> str:
    """``gather(bump.map(seed(n)))`` executed by unspool, inline; returns the run id."""
    from unspool import pipeline, step

    @step(enable_cache=False)
    def seed(n: int) -> list[int]:
        return list(range(n))

    @step(enable_cache=False)
    def bump(x: int) -> int:
        return x + 1

    @step(enable_cache=False)
    def gather(values: list[int]) -> int:
        return sum(values)

    @pipeline(dynamic=True)
    def big_map(n: int) -> None:
        gather(bump.map(seed(n)))

    return big_map(n=n).id


def mapped(n: int) -> list[tuple[str, str, list[str]]]:
    return [("seed", "seed", []), *[(("bump" if i == 0 else f"bump_{i + 1}"), "bump", ["seed"]) for i in range(n)]]


def distinct(n: int) -> list[tuple[str, str, list[str]]]:
    """n steps of different names, each fed by an earlier one: a wide tree that never folds."""
    return [(f"s{i}", f"s{i}", [f"s{(i - 1) // 3}"] if i else []) for i in range(n)]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="unspool-dash-bench-"))
    os.environ["UNSPOOL_HOME"] = str(home)
    os.environ["UNSPOOL_PROGRESS"] = "off"
    import httpx
    import sqlalchemy as sa

    from _dashboard_support import LiveServer, app_for_current_project
    from unspool._metadata_store import next_change_in, step_runs
    from unspool.testing import current_stores

    store = current_stores().metadata
    results: dict[str, Any] = {"steps": args.steps, "nodes": args.nodes, "machine": os.uname().machine, "load": os.getloadavg()}
    t = time.perf_counter()
    big = real_map_run(args.steps)
    results["real_run_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    wide = fill(store, "wide", distinct(args.nodes))
    live = fill(store, "live", mapped(20_000), status="running")
    results["fill_s"] = round(time.perf_counter() - t, 1)

    with LiveServer(app_for_current_project()) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        times = []
        for i in range(5):  # a new expansion key each time: never answered from the cache
            t = time.perf_counter()
            graph = http.get(f"/api/runs/{big}/graph", params={"expand": f"none{i}"}).raise_for_status().json()
            times.append(time.perf_counter() - t)
        assert graph["total_steps"] == args.steps + 2 and not graph.get("cached")
        assert [n["id"] for n in graph["nodes"]] == ["seed", "g:bump", "gather"], graph["nodes"][:5]
        assert {(e["source"], e["target"]): e["count"] for e in graph["edges"]} == {("seed", "g:bump"): args.steps, ("g:bump", "gather"): args.steps}
        t = time.perf_counter()
        cached = http.get(f"/api/runs/{big}/graph", params={"expand": "none0"}).raise_for_status().json()
        assert cached.get("cached")
        again = time.perf_counter() - t
        opened = []
        for i in range(3):
            t = time.perf_counter()
            expanded = http.get(f"/api/runs/{big}/graph", params={"expand": f"g:bump,none{i}"}).raise_for_status().json()
            opened.append(time.perf_counter() - t)
        assert expanded["nodes"][1]["shown"] == min(args.steps, 50_000)
        results["graph_api_s"] = {
            "median": round(statistics.median(times), 3), "max": round(max(times), 3),
            "server_ms": graph["elapsed_ms"], "finished_run_again_s": round(again, 3),
            "expanded_median": round(statistics.median(opened), 3),
        }
        t = time.perf_counter()
        wide_graph = http.get(f"/api/runs/{wide}/graph").raise_for_status().json()
        results["graph_api_wide_s"] = round(time.perf_counter() - t, 3)
        assert len(wide_graph["nodes"]) == args.nodes

        # live, server side: a committed change -> its event on the stream
        ids = [r[0] for r in store.read().__enter__().execute(sa.select(step_runs.c.id).where(step_runs.c.run_id == live).limit(60))]
        latencies: list[float] = []
        stamps: dict[str, float] = {}
        got = threading.Event()

        def listen() -> None:
            with httpx.Client(timeout=None) as client, client.stream("GET", server.url + "/api/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        for change in json.loads(line[6:]):
                            if change.get("id") in stamps and change.get("status") == "completed":
                                latencies.append(time.time() - stamps.pop(change["id"]))
                                got.set()
                    if len(latencies) >= 30:
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(1.0)  # the stream's first look at the store (it learns what is there)
        for step_id in ids[:30]:
            got.clear()
            with store.write() as conn:
                stamps[step_id] = time.time()
                conn.execute(step_runs.update().where(step_runs.c.id == step_id).values(status="completed", end_time=time.time(), changed=next_change_in(conn)))
            got.wait(10)
        results["live_server_s"] = {"p50": round(pct(latencies, 0.5), 3), "p95": round(pct(latencies, 0.95), 3), "n": len(latencies)}

        if not args.no_browser:
            results["browser"] = browser_figures(server.url, wide, live, ids[30:], store)

    out = BENCH / "results" / "dashboard-latest.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    for key, value in results.items():
        print(f"{key:>18}: {value}")
    print(f"written to {out}")
    return 0


def browser_figures(url: str, wide: str, live: str, ids: list[str], store: Any) -> dict[str, Any]:
    import shutil

    from playwright.sync_api import sync_playwright

    from unspool._metadata_store import next_change_in, step_runs

    executable = shutil.which("chromium")
    if executable is None:
        return {"skipped": "chromium is not installed"}
    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--ignore-gpu-blocklist"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script("""
            window.__long = [];
            new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__long.push([e.startTime, e.duration]); })
                .observe({ type: 'longtask', buffered: true });
        """)
        t = time.perf_counter()
        page.goto(f"{url}/#/runs/{wide}")
        page.wait_for_function("document.querySelector('.canvas-host')?.dataset.ready === '1'", timeout=120_000)
        page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        out["first_view_s"] = round(time.perf_counter() - t, 2)
        out["layout_worker_ms"] = round(page.evaluate("window.__unspool.view.lastLayoutMs"), 1)
        longs = page.evaluate("window.__long")
        marks = dict(page.evaluate("performance.getEntriesByType('mark').map(m => [m.name, m.startTime])"))
        # from the graph's arrival to its last edge drawn: layout, placement, painting
        start, end = marks["unspool:graph-fetched"], marks["unspool:graph-drawn"]
        during = [d for t, d in longs if t + d > start and t < end]
        out["long_tasks_ms"] = {"count": len(longs), "max": round(max((d for _, d in longs), default=0), 1)}
        out["long_tasks_while_laying_out_ms"] = {"count": len(during), "max": round(max(during, default=0), 1)}
        out["phases_ms"] = {
            "canvas_init": round(marks["unspool:canvas-ready"] - marks["unspool:canvas-init"]),
            "fetched_at": round(start), "layout": round(marks["unspool:layout-done"] - marks["unspool:layout-start"]),
            "layout_to_drawn": round(end - marks["unspool:layout-done"]),
        }

        # pan an expanded group of 20,000 cells
        page.goto(f"{url}/#/runs/{live}?expand=g:bump")
        page.wait_for_function("window.__unspool?.view.regions.size === 1", timeout=120_000)
        page.wait_for_function("document.querySelector('.canvas-host')?.dataset.ready === '1'", timeout=120_000)
        box = page.locator(".canvas-host canvas").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.evaluate("window.__frames = 0; (function f(){ window.__frames++; requestAnimationFrame(f); })()")
        page.mouse.move(cx, cy)
        page.mouse.down()
        start = page.evaluate("[window.__frames, performance.now()]")
        for i in range(60):
            page.mouse.move(cx + 200 * ((i % 20) / 20 - 0.5), cy + 100 * ((i % 10) / 10 - 0.5))
        end = page.evaluate("[window.__frames, performance.now()]")
        page.mouse.up()
        out["pan_fps_20000_cells"] = round((end[0] - start[0]) / ((end[1] - start[1]) / 1000), 1)

        # live: committed change -> the member cell's colour on the page
        page.evaluate("""() => {
            window.__changed = {};
            const view = window.__unspool.view;
            const apply = view.apply.bind(view);
            view.apply = (c) => { const r = apply(c); window.__changed[c.id] = Date.now() / 1000; return r; };
        }""")
        lat = []
        for step_id in ids[:20]:
            with store.write() as conn:
                stamp = time.time()
                conn.execute(step_runs.update().where(step_runs.c.id == step_id).values(status="completed", end_time=stamp, changed=next_change_in(conn)))
            page.wait_for_function(f"window.__changed['{step_id}'] !== undefined", timeout=10_000)
            page.evaluate("new Promise(r => requestAnimationFrame(r))")
            lat.append(time.time() - stamp)
        out["live_to_colour_s"] = {"p50": round(pct(lat, 0.5), 3), "p95": round(pct(lat, 0.95), 3), "n": len(lat)}
        browser.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
