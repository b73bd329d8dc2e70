"""The dashboard's JSON API and event stream, against real stores holding real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from unspool import Client, StepFailedError, pipeline, step

fastapi = pytest.importorskip("fastapi", reason="the dashboard extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from _dashboard_support import LiveServer, app_for_current_project, start_script, wait_for  # noqa: E402


@step
def make_items(n: int) -> list[int]:
    print(f"making {n} items")
    return list(range(n))


@step
def square(x: int) -> int:
    print(f"squaring {x}")
    return x * x


@step
def total(values: list[int]) -> int:
    return sum(values)


@step
def explode(x: int) -> int:
    raise ValueError(f"cannot take {x}")


@pipeline(dynamic=True)
def fan(n: int = 20):
    items = make_items(n)
    squares = square.map(items)
    total(squares)


@pipeline(dynamic=True)
def chain(n: int = 4):
    value = square(2)
    for _ in range(n - 1):
        value = square(value)


@pipeline(dynamic=True)
def child_fan():
    return make_items(3)


@pipeline(dynamic=True)
def parent():
    items = child_fan()
    square.map(items)


@pipeline(dynamic=True)
def failing():
    explode(1)


def client_for(**kwargs: Any) -> TestClient:
    return TestClient(app_for_current_project(**kwargs), base_url="http://127.0.0.1:8237")


def test_importing_unspool_does_not_import_the_server() -> None:
    code = "import sys, unspool; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_runs_are_listed_newest_first_in_pages_and_filtered() -> None:
    ids = [fan.with_options(enable_cache=False)(n=3).id for _ in range(3)]
    with pytest.raises(StepFailedError):
        failing()
    api = client_for()
    first = api.get("/api/runs", params={"limit": 2}).json()
    assert len(first["runs"]) == 2 and first["next_cursor"]
    second = api.get("/api/runs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    listed = [r["id"] for r in first["runs"] + second["runs"]]
    assert listed[1:] == ids[::-1] and second["next_cursor"] is None
    failed = api.get("/api/runs", params={"status": "failed"}).json()["runs"]
    assert [r["pipeline_name"] for r in failed] == ["failing"]
    assert failed[0]["failed_steps"] == ["explode"]
    assert failed[0]["step_counts"] == {"failed": 1}
    done = api.get("/api/runs", params={"pipeline": "fan"}).json()["runs"]
    assert {r["status"] for r in done} == {"completed"} and len(done) == 3
    assert done[0]["step_counts"] == {"completed": 5} and done[0]["duration"] > 0
    assert api.get("/api/runs", params={"cursor": "nonsense"}).status_code == 400
    assert api.get("/api/pipelines").json()["pipelines"] == ["failing", "fan"]


def test_run_detail_has_counts_children_and_budget() -> None:
    run = parent()
    api = client_for()
    detail = api.get(f"/api/runs/{run.id}").json()
    assert detail["status"] == "completed"
    assert detail["step_counts"] == {"completed": 3}
    assert [c["invocation_id"] for c in detail["children"]] == ["pipeline:child_fan"]
    assert detail["children"][0]["step_counts"] == {"completed": 1}
    assert "budget" in detail and detail["parameters"] == {}
    by_name = api.get(f"/api/runs/{run.name}").json()
    assert by_name["id"] == run.id
    assert api.get("/api/runs/nope").status_code == 404


def test_graph_folds_a_map_into_a_group_with_counts_and_expands_it() -> None:
    run = fan(n=20)
    api = client_for()
    graph = api.get(f"/api/runs/{run.id}/graph").json()
    kinds = {n["id"]: n for n in graph["nodes"]}
    assert set(kinds) == {"make_items", "g:square", "total"}
    group = kinds["g:square"]
    assert group["kind"] == "group" and group["size"] == 20 and group["counts"] == {"completed": 20}
    assert group["status"] == "completed"
    edges = {(e["source"], e["target"]): e["count"] for e in graph["edges"]}
    assert edges == {("make_items", "g:square"): 20, ("g:square", "total"): 20}
    assert graph["total_steps"] == 22
    opened = api.get(f"/api/runs/{run.id}/graph", params={"expand": "g:square"}).json()
    members = [n for n in opened["nodes"] if n.get("group") == "g:square"]
    assert len(members) == 20 and {m["status"] for m in members} == {"completed"}
    assert members[0]["id"] == "square" and members[-1]["id"] == "square_20"
    # members are drawn as cells of their group: edges stay between skeleton nodes
    assert {(e["source"], e["target"]) for e in opened["edges"]} == {("make_items", "g:square"), ("g:square", "total")}
    # members are pageable as steps too
    page = api.get(f"/api/runs/{run.id}/steps", params={"step_name": "square", "limit": 8}).json()
    assert [s["invocation_id"] for s in page["steps"]][:2] == ["square", "square_2"]
    rest = api.get(f"/api/runs/{run.id}/steps", params={"step_name": "square", "limit": 100, "cursor": page["next_cursor"]}).json()
    assert len(page["steps"]) + len(rest["steps"]) == 20 and rest["next_cursor"] is None


def test_a_chain_of_one_step_is_not_folded_and_child_runs_are_nodes() -> None:
    run = chain(n=4)
    api = client_for()
    graph = api.get(f"/api/runs/{run.id}/graph").json()
    assert [n["id"] for n in graph["nodes"]] == ["square", "square_2", "square_3", "square_4"]
    run2 = parent()
    graph2 = api.get(f"/api/runs/{run2.id}/graph").json()
    child = [n for n in graph2["nodes"] if n["kind"] == "run"]
    assert len(child) == 1 and child[0]["label"] == "pipeline:child_fan" and child[0]["counts"] == {"completed": 1}
    assert {"source": child[0]["id"], "target": "g:square", "count": 3} in graph2["edges"]


def test_groups_come_from_map_calls_not_from_step_names() -> None:
    @pipeline(dynamic=True)
    def calls():
        items = make_items(3)
        first = square.map(items)  # two map calls of one step, back to back: two groups
        second = square.map(items)
        for x in range(3):  # three plain calls of one step, independent of each other: three nodes
            square(x)
        one = square.map([5])  # a map of one item is still a group
        total(first)
        total(second)
        total(one)

    run = calls()
    graph = client_for().get(f"/api/runs/{run.id}/graph").json()
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert kinds == {
        "make_items": "step", "g:square": "group", "g:square_4": "group",
        "square_7": "step", "square_8": "step", "square_9": "step", "g:square_10": "group",
        "total": "step", "total_2": "step", "total_3": "step",
    }
    sizes = {n["id"]: n["size"] for n in graph["nodes"] if n["kind"] == "group"}
    assert sizes == {"g:square": 3, "g:square_4": 3, "g:square_10": 1}
    edges = {(e["source"], e["target"]): e["count"] for e in graph["edges"]}
    assert edges == {
        ("make_items", "g:square"): 3, ("make_items", "g:square_4"): 3,
        ("g:square", "total"): 3, ("g:square_4", "total_2"): 3, ("g:square_10", "total_3"): 1,
    }
    assert graph["total_steps"] == 14
    # the marker is recorded on each member's configuration, so every reader can see it
    members = [s for s in Client().get_pipeline_run(run.id).steps.values() if s.config.get("map") == "square_4"]
    assert sorted(s.invocation_id for s in members) == ["square_4", "square_5", "square_6"]
    # the group's panel lists its members by that marker
    listed = client_for().get(f"/api/runs/{run.id}/steps", params={"map": "square_4"}).json()["steps"]
    assert [s["invocation_id"] for s in listed] == ["square_4", "square_5", "square_6"]


@pipeline(dynamic=True)
def middle():
    items = child_fan()  # a grandchild run
    return total(square.map(items))


@pipeline(dynamic=True)
def outer():
    total([middle()])


def test_child_runs_arrive_as_nested_groups_with_their_own_graphs() -> None:
    run = outer()
    graph = client_for().get(f"/api/runs/{run.id}/graph").json()
    child = next(n for n in graph["nodes"] if n["kind"] == "run")
    assert child["label"] == "pipeline:middle"
    inner = child["graph"]
    kinds = {n["id"]: n["kind"] for n in inner["nodes"]}
    grandchild = next(n for n in inner["nodes"] if n["kind"] == "run")
    assert kinds == {"g:square": "group", "total": "step", grandchild["id"]: "run"}
    assert {(e["source"], e["target"]) for e in inner["edges"]} == {(grandchild["id"], "g:square"), ("g:square", "total")}
    assert next(n for n in inner["nodes"] if n["id"] == "g:square")["counts"] == {"completed": 3}
    assert [n["id"] for n in grandchild["graph"]["nodes"]] == ["make_items"]
    assert {"source": child["id"], "target": "total", "count": 1} in graph["edges"]


def test_a_child_run_reusing_the_parents_step_names_feeds_from_its_own_node() -> None:
    @pipeline(dynamic=True)
    def both():
        mine = make_items(2)
        theirs = child_fan()  # also calls make_items: the same invocation id in the child
        total(mine)
        total(theirs)

    run = both()
    graph = client_for().get(f"/api/runs/{run.id}/graph").json()
    child = next(n for n in graph["nodes"] if n["kind"] == "run")
    edges = {(e["source"], e["target"]): e["count"] for e in graph["edges"]}
    # two calls of one step are two nodes (only a map call folds); each reads its own make_items
    assert edges == {("make_items", "total"): 1, (child["id"], "total_2"): 1}


def test_step_detail_io_error_and_logs_with_offsets() -> None:
    run = fan(n=3)
    api = client_for()
    steps = {s["invocation_id"]: s for s in api.get(f"/api/runs/{run.id}/steps").json()["steps"]}
    detail = api.get(f"/api/steps/{steps['square_2']['id']}").json()
    assert detail["parameters"] == {} and detail["status"] == "completed"
    assert [i["io_name"] for i in detail["inputs"]] == ["x"] and detail["inputs"][0]["item_index"] == 1
    assert [o["io_name"] for o in detail["outputs"]] == ["output"]
    assert detail["attempts"][0]["status"] == "completed" and detail["runtime"] == "inline"
    logs = api.get(f"/api/steps/{steps['square_2']['id']}/logs").json()
    assert "squaring 1" in logs["text"] and logs["finished"] and logs["next_offset"] == logs["size"]
    later = api.get(f"/api/steps/{steps['square_2']['id']}/logs", params={"offset": logs["next_offset"]}).json()
    assert later["text"] == "" and later["offset"] == logs["size"]
    tail = api.get(f"/api/steps/{steps['square_2']['id']}/logs", params={"offset": -1, "limit": 12}).json()
    assert tail["next_offset"] == logs["size"] and "squaring 1" in logs["text"][tail["offset"] :] + tail["text"]
    with pytest.raises(StepFailedError):
        failing()
    bad = Client().list_pipeline_runs("failing")[0]
    step_row = api.get(f"/api/runs/{bad.id}/steps").json()["steps"][0]
    error = api.get(f"/api/steps/{step_row['id']}").json()["error"]
    assert error["type"] == "ValueError" and "cannot take 1" in error["message"] and "Traceback" in error["traceback"]
    assert api.get("/api/steps/nope").status_code == 404


class Loud:
    """Unpickling it leaves a mark: the test sees whether the dashboard unpickled it."""

    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["mark"]).write_text("unpickled")
        self.__dict__.update(state)


def test_artifacts_versions_lineage_and_previews_that_never_unpickle_unasked(tmp_path: Path) -> None:
    mark = tmp_path / "mark"

    @step
    def values() -> dict:
        return {"a": 1, "b": [1, 2]}

    @step
    def array() -> np.ndarray:
        return np.arange(12, dtype=np.float64).reshape(3, 4)

    @step
    def opaque() -> Loud:
        return Loud(str(mark))

    @step
    def text() -> str:
        return "hello"

    @pipeline(dynamic=True)
    def things():
        items = make_items(5)
        square(items.chunk(2))
        values()
        array()
        opaque()
        text()

    run = things()
    api = client_for()
    names = [a["name"] for a in api.get("/api/artifacts").json()["artifacts"]]
    assert "things::make_items::output" in names
    versions = api.get("/api/artifacts/things::make_items::output/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1]
    version = api.get(f"/api/artifact-versions/{versions[0]['id']}").json()
    steps = {s["invocation_id"]: s for s in api.get(f"/api/runs/{run.id}/steps").json()["steps"]}
    assert version["producer"]["invocation_id"] == "make_items"
    assert [c["invocation_id"] for c in version["consumers"]] == ["square"]
    assert [d["name"] for d in version["lineage"]["downstream"]] == ["things::square::output"]

    def preview_of(invocation: str, **params: Any) -> dict[str, Any]:
        out = api.get(f"/api/steps/{steps[invocation]['id']}").json()["outputs"][0]
        return api.get(f"/api/artifact-versions/{out['id']}/preview", params=params).json()

    seq = preview_of("make_items", max_rows=3)
    assert seq["kind"] == "sequence" and seq["items"] == [0, 1, 2] and seq["count"] == 5 and seq["truncated"]
    assert preview_of("values") ["value"] == {"a": 1, "b": [1, 2]}
    arr = preview_of("array")
    assert arr["kind"] == "array" and arr["shape"] == [3, 4] and arr["dtype"] == "float64"
    assert arr["summary"]["max"] == 11.0 and arr["sample"][:3] == [0.0, 1.0, 2.0]
    assert preview_of("text")["value"] == "hello"
    pickled = preview_of("opaque")
    assert pickled["kind"] == "pickled" and pickled["pickled"] and not mark.exists()
    out = api.get(f"/api/steps/{steps['opaque']['id']}").json()["outputs"][0]
    refused = api.get(f"/api/artifact-versions/{out['id']}/preview", params={"unpickle": True})
    assert refused.status_code == 401 and not mark.exists()  # unpickling needs the token header
    token = api.app.state.token
    loaded = api.get(f"/api/artifact-versions/{out['id']}/preview", params={"unpickle": True}, headers={"x-unspool-token": token})
    assert "Loud" in loaded.json()["text"] and mark.exists()
    assert api.get("/api/artifacts/nope/versions").status_code == 404


def test_a_dataframe_preview_is_a_table_only_when_asked() -> None:
    @step
    def frame() -> pd.DataFrame:
        return pd.DataFrame({"x": range(2000), "y": ["a"] * 2000})

    @pipeline(dynamic=True)
    def frames():
        frame()

    run = frames()
    api = client_for()
    step_id = api.get(f"/api/runs/{run.id}/steps").json()["steps"][0]["id"]
    out = api.get(f"/api/steps/{step_id}").json()["outputs"][0]
    shut = api.get(f"/api/artifact-versions/{out['id']}/preview").json()
    assert shut["kind"] == "pickled" and shut["metadata"]["rows"] == 2000
    table = api.get(
        f"/api/artifact-versions/{out['id']}/preview", params={"unpickle": True, "max_rows": 5},
        headers={"x-unspool-token": api.app.state.token},
    ).json()
    assert table["kind"] == "table" and table["columns"] == ["x", "y"] and table["rows"] == 2000
    assert table["data"][:2] == [[0, "a"], [1, "a"]] and table["truncated"]


def test_loopback_refuses_foreign_hosts_and_posts_need_the_token_and_the_same_origin() -> None:
    with pytest.raises(StepFailedError):
        failing()
    run = Client().list_pipeline_runs("failing")[0]
    api = client_for(token="secret")
    assert api.get("/api/runs").status_code == 200
    assert api.get("/api/runs", headers={"host": "evil.example:8237"}).status_code == 403
    assert api.post(f"/api/runs/{run.id}/resume").status_code == 401
    cross = api.post(f"/api/runs/{run.id}/resume", headers={"x-unspool-token": "secret", "origin": "http://evil.example"})
    assert cross.status_code == 403
    page = api.get("/")
    assert page.status_code == 200
    finished = api.get(f"/api/runs/{Client().list_pipeline_runs('failing')[0].id}").json()
    assert finished["status"] == "failed"
    ok = api.post(
        f"/api/runs/{run.id}/resume",
        headers={"x-unspool-token": "secret", "origin": "http://127.0.0.1:8237"},
    )
    assert ok.status_code == 202 and ok.json()["run_id"] == run.id
    (resumer,) = api.app.state.processes
    assert resumer.wait(120) == 0 or True  # the body fails again: the resume's exit code says so
    assert resumer.returncode is not None


def test_a_non_loopback_dashboard_needs_the_token_on_every_request() -> None:
    fan(n=2)
    api = client_for(token="s3cret", loopback=False)
    assert api.get("/api/runs").status_code == 401
    assert api.get("/").status_code == 401
    assert api.get("/api/runs", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/runs", headers={"authorization": "Bearer s3cret"}).status_code == 200
    login = api.get("/?token=s3cret", follow_redirects=False)
    assert login.status_code == 303 and "token" not in login.headers["location"]
    assert api.get("/api/runs").status_code == 200  # the cookie the login set


def test_events_stream_status_changes_of_a_run_in_another_process(tmp_path: Path) -> None:
    import httpx

    gate = tmp_path / "gate"
    started = tmp_path / "started"
    app = app_for_current_project()
    with LiveServer(app) as server:
        received: list[dict[str, Any]] = []
        proc = None
        with httpx.Client(timeout=60) as http, http.stream("GET", server.url + "/api/events") as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry")
            proc = start_script(tmp_path, f"""
                import pathlib, time
                from unspool import pipeline, step

                @step
                def hold() -> int:
                    pathlib.Path({str(started)!r}).write_text("x")
                    while not pathlib.Path({str(gate)!r}).exists():
                        time.sleep(0.02)
                    return 1

                @step
                def after(x: int) -> int:
                    return x + 1

                @pipeline(dynamic=True)
                def watched():
                    after(hold())

                watched()
            """)
            saw_running = False
            for line in lines:
                if not line.startswith("data: "):
                    continue
                received.extend(json.loads(line[6:]))
                if not saw_running and any(e["kind"] == "step" and e["invocation_id"] == "hold" and e["status"] == "running" for e in received):
                    saw_running = True
                    assert started.exists() or wait_for(started.exists, what="the step to start")
                    gate.write_text("go")
                if any(e["kind"] == "run" and e["pipeline_name"] == "watched" and e["status"] == "completed" for e in received):
                    break
        assert proc.wait(60) == 0
    steps = [(e["invocation_id"], e["status"]) for e in received if e["kind"] == "step"]
    assert ("hold", "running") in steps and ("hold", "completed") in steps and ("after", "completed") in steps
    runs = [e["status"] for e in received if e["kind"] == "run"]
    assert runs[-1] == "completed"


def test_postgres_store_serves_runs_graph_steps_and_changes(pg_url: str) -> None:
    from unspool.dashboard._watch import Watcher
    from unspool.testing import current_stores

    run = fan(n=12)
    api = client_for()
    runs = api.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == [run.id] and runs[0]["step_counts"] == {"completed": 14}
    graph = api.get(f"/api/runs/{run.id}/graph").json()
    assert [n["id"] for n in graph["nodes"]] == ["make_items", "g:square", "total"]
    assert graph["nodes"][1]["counts"] == {"completed": 12}
    page = api.get(f"/api/runs/{run.id}/steps", params={"limit": 5}).json()
    more = api.get(f"/api/runs/{run.id}/steps", params={"cursor": page["next_cursor"]}).json()
    assert len(page["steps"]) + len(more["steps"]) == 14
    watcher = Watcher(current_stores().metadata)
    assert watcher.poll() == []  # the first look only learns what is there
    second = fan.with_options(enable_cache=False)(n=2)
    changes = watcher.poll()
    assert {(e["kind"], e["invocation_id"], e["status"]) for e in changes if e["kind"] == "step"} >= {
        ("step", "make_items", "completed"), ("step", "square_2", "completed"), ("step", "total", "completed"),
    }
    assert any(e["kind"] == "run" and e["id"] == second.id and e["status"] == "completed" for e in changes)
    assert watcher.poll() == []  # nothing changed since


def test_the_watcher_reports_each_change_of_a_growing_run_once() -> None:
    import threading

    from unspool.dashboard._watch import Watcher
    from unspool.testing import current_stores

    gates = [threading.Event(), threading.Event()]

    @step(enable_cache=False)
    def hold(i: int) -> int:
        assert gates[i].wait(60)
        return i

    @pipeline(dynamic=True)
    def slow():
        first = hold.submit(0)
        first.result()
        hold.submit(1)

    watcher = Watcher(current_stores().metadata)
    assert watcher.poll() == []
    seen: list[tuple[str, str, str]] = []

    def look(*wanted: tuple[str, str, str]) -> bool:
        seen.extend((e["kind"], e.get("invocation_id") or e["name"], e["status"]) for e in watcher.poll())
        return all(w in seen for w in wanted)

    runner = threading.Thread(target=slow)
    runner.start()
    wait_for(lambda: look(("step", "hold", "running")), what="hold to run")
    assert not any(s[1] == "hold_2" for s in seen)  # not called yet: the graph has one node
    gates[0].set()
    wait_for(lambda: look(("step", "hold", "completed"), ("step", "hold_2", "running")), what="hold_2 to run")
    gates[1].set()
    runner.join(60)
    wait_for(lambda: look(("step", "hold_2", "completed")) and any(s[0] == "run" and s[2] == "completed" for s in seen), what="the run to end")
    for _ in range(3):
        look()
    steps = [s for s in seen if s[0] == "step"]
    assert len(steps) == len(set(steps)), f"a change was reported twice: {steps}"
    assert [s[2] for s in seen if s[0] == "run"][-1] == "completed"


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_watcher_follows_the_store_cursor_not_the_writers_clock(database: str, request: pytest.FixtureRequest) -> None:
    """Another writer whose clock is an hour behind: every status change it stores reaches the
    watcher once, in commit order, though all its timestamps are far older than any look-back."""
    import time

    from unspool._ids import new_id
    from unspool._metadata_store import MetadataStore
    from unspool.dashboard._watch import Watcher
    from unspool.testing import current_stores

    if database == "postgres":
        request.getfixturevalue("pg_url")
    watcher = Watcher(current_stores().metadata)
    assert watcher.poll() == []
    other = MetadataStore(current_stores().metadata.url)  # its own writer and connection
    past = time.time() - 3600
    run_id, steps = new_id(), [new_id(), new_id()]

    def add_step(i: int) -> None:
        other.insert_step_run({
            "id": steps[i], "run_id": run_id, "invocation_id": f"s{i}", "position": i, "step_name": "s",
            "status": "running", "parameters": {}, "config": {}, "upstream": [], "attempts": [],
            "step_metadata": {}, "start_time": past + i,
        })

    def look() -> list[tuple[str, str, str]]:
        return [(e["kind"], e.get("invocation_id") or e["name"], e["status"]) for e in watcher.poll()]

    try:
        other.insert_run({
            "id": run_id, "name": f"elsewhere-{run_id}", "pipeline_name": "elsewhere", "status": "running",
            "dynamic": True, "parameters": {}, "config": {}, "run_metadata": {}, "created_at": past,
            "start_time": past,
        })
        add_step(0)
        other.flush()
        assert look() == [("run", f"elsewhere-{run_id}", "running"), ("step", "s0", "running")]
        add_step(1)
        other.flush()
        other.update_step_run(steps[0], status="completed", end_time=past + 2)
        other.flush()
        # two flushes between looks: in the order they committed, not by position or by clock
        assert look() == [("step", "s1", "running"), ("step", "s0", "completed")]
        other.update_step_run(steps[1], status="completed", end_time=past + 3)
        other.update_run(run_id, status="completed", end_time=past + 3)
        other.flush()
        assert look() == [("step", "s1", "completed"), ("run", f"elsewhere-{run_id}", "completed")]
        other.update_run(run_id, run_metadata={"note": "rewritten, same status"})
        other.flush()
        assert look() == [] and look() == []  # nothing twice
    finally:
        other.close()


def test_a_reaped_run_reaches_the_watcher() -> None:
    """Writes outside the flush stamp the cursor too: a run whose owner died, marked stopped
    by the reaper's own transaction, and its unfinished step, each arrive once."""
    from unspool._ids import new_id
    from unspool._ownership import reap_runs
    from unspool.dashboard._watch import Watcher
    from unspool.testing import current_stores

    store = current_stores().metadata
    watcher = Watcher(store)
    run_id, step_id, owner = new_id(), new_id(), "elsewhere:1:1:dead"
    store.insert_run({
        "id": run_id, "name": f"orphan-{run_id}", "pipeline_name": "orphan", "status": "running", "dynamic": True,
        "parameters": {}, "config": {}, "run_metadata": {}, "created_at": 0.0, "owner": owner,
    })
    store.insert_step_run({
        "id": step_id, "run_id": run_id, "invocation_id": "left", "position": 0, "step_name": "left",
        "status": "running", "parameters": {}, "config": {}, "upstream": [], "attempts": [], "step_metadata": {},
    })
    store.flush()
    assert watcher.poll() == []  # the first look learns where the cursor is
    assert reap_runs(store, [(run_id, owner, None)], {run_id: {"message": "its owner died"}}) == [run_id]
    seen = [(e["kind"], e["status"]) for e in watcher.poll()]
    assert seen == [("step", "stopped"), ("run", "stopped")] and watcher.poll() == []


def test_trigger_starts_a_snapshot_with_parameters_behind_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    project = tmp_path / "project"
    project.mkdir()
    (project / "dash_flows.py").write_text(
        "from unspool import pipeline, step\n\n"
        "@step(enable_cache=False)\n"
        "def double(x: int) -> int:\n"
        "    return x * 2\n\n"
        "@pipeline(dynamic=True)\n"
        "def doubling(n: int = 1):\n"
        "    for i in range(n):\n"
        "        double(i)\n"
    )
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("PYTHONPATH", str(project) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    flows = importlib.import_module("dash_flows")
    try:
        snapshot = flows.doubling.create_snapshot("dash-snap")
        api = client_for(token="tok")
        url = f"/api/snapshots/{snapshot.name}/trigger"
        assert api.post(url, json={"parameters": {"n": 3}}).status_code == 401
        started = api.post(url, json={"parameters": {"n": 3}}, headers={"x-unspool-token": "tok"})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        detail = wait_for(
            lambda: (d := api.get(f"/api/runs/{run_id}").json())["status"] == "completed" and d, what="the triggered run"
        )
        assert detail["parameters"] == {"n": 3} and detail["step_counts"] == {"completed": 3}
        assert detail["snapshot_id"] == snapshot.id
        missing = api.post("/api/snapshots/nope/trigger", json={}, headers={"x-unspool-token": "tok"})
        assert missing.status_code == 404
    finally:
        sys.modules.pop("dash_flows", None)


def test_the_timeline_says_when_and_where_each_step_ran() -> None:
    @step(runtime="isolated", enable_cache=False)
    def apart(x: int) -> int:
        return x

    @pipeline(dynamic=True)
    def mixed():
        apart(square(3))

    run = mixed()
    timeline = client_for().get(f"/api/runs/{run.id}/timeline").json()
    assert timeline["orchestrator"] == "local" and not timeline["truncated"]
    rows = {s["invocation_id"]: s for s in timeline["steps"]}
    assert rows["square"]["executor"] == "thread" and rows["apart"]["executor"] == "process"
    assert rows["square"]["start_time"] <= rows["apart"]["start_time"] <= rows["apart"]["end_time"]
