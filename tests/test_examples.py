"""The worked examples in examples/: run as a user runs them, checked by what the store holds."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from unspool import Client, ExecutionStatus
from unspool._cli import app

if not os.environ.get("CI"):  # CI installs the examples extra (make test): missing there is a failure
    pytest.importorskip("optuna")
    pytest.importorskip("sklearn")
    pytest.importorskip("pydantic_ai")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_module(folder: str, name: str) -> Any:
    """The example's module, imported as ``unspool run`` imports it (its folder on sys.path)."""
    path = str(EXAMPLES / folder)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)
runner = CliRunner()


def run_example(target: str, *params: str, config: str | None = None, code: int = 0) -> Any:
    args = ["run", str(EXAMPLES / target)]
    if config:
        args += ["--config", str(EXAMPLES / config)]
    for p in params:
        args += ["--param", p]
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.output, result.exception)
    return Client().list_pipeline_runs(pipeline_name=target.rsplit(":", 1)[1], limit=1)[0]


def all_steps(run: Any) -> list[Any]:
    return [*run.steps.values(), *(s for child in run.child_runs for s in all_steps(child))]


# -- optuna ------------------------------------------------------------------------------------------

def test_optuna_sweep_survives_a_crash_keeps_the_best_trial_and_reruns_from_the_cache() -> None:
    run = run_example("optuna_tuning/tuning.py:optuna_tuning", "crash_trials=[2]",
                      config="optuna_tuning/config.yaml")  # the body caught the failure: run completed
    assert run.status == ExecutionStatus.COMPLETED and run.metadata["handled_failures"]
    trials = {s.invocation_id: s for s in run.steps.values() if s.name == "run_trial"}
    assert len(trials) == 12
    assert trials["run_trial_3"].status == ExecutionStatus.FAILED
    assert "crashed" in trials["run_trial_3"].error["message"]
    done = [s for s in trials.values() if s.status == ExecutionStatus.COMPLETED]
    assert len(done) == 11
    states = [s.metadata["state"] for s in done]
    assert "pruned" in states and "complete" in states
    assert all(s.metadata["epochs_run"] < 12 for s in done if s.metadata["state"] == "pruned")
    complete = [s for s in done if s.metadata["state"] == "complete"]
    best = max(complete, key=lambda s: s.metadata["accuracy"])
    params = Client().get_artifact_version("best_params").load()
    assert params == {k: best.metadata[k] for k in params}
    assert run.steps["select_best"].metadata["best_value"] == best.metadata["accuracy"]
    assert type(Client().get_artifact_version("best_model").load()).__name__ == "SGDClassifier"

    again = run_example("optuna_tuning/tuning.py:optuna_tuning", "crash_trials=[2]",
                        config="optuna_tuning/config.yaml")
    statuses = {s.invocation_id: s.status for s in again.steps.values()}
    assert statuses.pop("run_trial_3") == ExecutionStatus.FAILED  # failures are never cached
    assert set(statuses.values()) == {ExecutionStatus.CACHED}


def test_a_trial_without_a_metric_is_never_the_best() -> None:
    tuning = example_module("optuna_tuning", "tuning")
    records = [
        {"number": 0, "params": {}, "state": "complete", "value": 0.8, "intermediate": {}},
        {"number": 1, "params": {}, "state": "fail", "value": None, "intermediate": {}},
        {"number": 2, "params": {}, "state": "complete", "value": float("nan"), "intermediate": {}},
        {"number": 3, "params": {}, "state": "pruned", "value": 0.99, "intermediate": {"0": 0.99}},
    ]
    assert tuning.best_record(records)["number"] == 0
    assert tuning.best_record(records[1:]) is None


def test_optuna_batch_mode_runs_one_round() -> None:
    run = run_example("optuna_tuning/tuning.py:optuna_tuning", "mode=batch", "n_trials=5", "epochs=4")
    trials = [s for s in run.steps.values() if s.name == "run_trial"]
    assert len(trials) == 5
    assert {s.metadata["state"] for s in trials} == {"complete"}  # no history to prune against
    assert run.steps["retrain"].status == ExecutionStatus.COMPLETED


# -- document search ---------------------------------------------------------------------------------

def test_deep_query_goes_deeper_finds_the_answer_and_records_spend() -> None:
    run = run_example("doc_search_agent/doc_search.py:doc_search", config="doc_search_agent/config.yaml")
    visits = [s for s in run.steps.values() if s.name == "traverse_node"]
    result = Client().get_artifact_version("doc_search_result").load()
    assert result.kind == "deep" and result.agents == 3
    assert any("PgBouncer" in a and "pool exhaustion" in a for a in result.answers)
    assert {"inc-2024-03", "pm-2024-03", "fix-pgbouncer"} <= set(result.explored)
    assert len(result.explored) == len(set(result.explored)) == len(visits)  # no document twice
    answering = [s for s in visits if s.metadata["has_answer"]]
    assert [s.metadata["node"] for s in answering] == ["fix-pgbouncer"]
    assert answering[0].metadata["depth"] == 2
    tokens = sum(s.metadata["spend"]["tokens"] for s in visits)
    assert tokens > 0 and run.metadata["spend"]["tokens"] == tokens
    assert run.metadata["spend"]["calls"] == len(visits)
    assert "<h2>Answers</h2>" in Client().get_artifact_version("doc_search_report").load()


def test_simple_query_is_a_keyword_search() -> None:
    run = run_example("doc_search_agent/doc_search.py:doc_search", "query=How do I rotate API keys?")
    assert not [s for s in run.steps.values() if s.name == "traverse_node"]
    result = Client().get_artifact_version("doc_search_result").load()
    assert result.kind == "simple" and result.hits[0]["id"] == "api-keys" and len(result.hits) <= 5


def test_a_failing_agent_is_a_failed_step_and_the_search_goes_on() -> None:
    run = run_example("doc_search_agent/doc_search.py:doc_search", 'fail_nodes=["runbook-checkout"]',
                      "stop_on_answer=false")  # the search caught it and went on: run completed
    assert run.status == ExecutionStatus.COMPLETED
    failed = [s for s in run.steps.values() if s.status == ExecutionStatus.FAILED]
    assert [s.name for s in failed] == ["traverse_node"]
    result = Client().get_artifact_version("doc_search_result").load()
    assert result.failed_nodes == ["runbook-checkout"]
    assert result.answers and "runbook-checkout" not in result.explored


def test_the_spend_budget_stops_the_traversal(tmp_path: Path) -> None:
    config = tmp_path / "tight.yaml"
    config.write_text("budget: {spend: {tokens: 600}}\n")
    result = runner.invoke(app, ["run", str(EXAMPLES / "doc_search_agent/doc_search.py:doc_search"),
                                 "--config", str(config)])
    assert result.exit_code == 0, result.output
    run = Client().list_pipeline_runs(pipeline_name="doc_search", limit=1)[0]
    found = Client().get_artifact_version("doc_search_result").load()
    assert found.stopped_by and "spend.tokens=600" in found.stopped_by
    assert run.metadata["spend"]["tokens"] >= 600  # steps already started finish and count
    assert found.answers == [] and max(s.metadata["depth"] for s in run.steps.values() if "depth" in s.metadata) <= 1
    assert run.steps["html_report"].status == ExecutionStatus.COMPLETED  # run in spend_exempt()


# -- recursive analysis ------------------------------------------------------------------------------

def test_rlm_analysis_splits_recurses_and_synthesises() -> None:
    run = run_example("rlm_analysis/rlm.py:rlm_analysis", config="rlm_analysis/config.yaml")
    assert len(run.child_runs) == 2  # the two chunks above max_chunk_emails were split again
    chunks = [s for s in all_steps(run) if s.name == "analyze_chunk"]
    assert len(chunks) == 5
    assert sum(s.metadata["emails"] for s in chunks) == 60
    for s in chunks:
        assert {"calls", "iterations", "matches", "duration_s"} <= set(s.metadata)
        assert s.metadata["calls"] == s.metadata["spend"]["calls"] <= 7
        assert s.outputs["trajectory"][0].load()[-1]["tool"] == "Done"
    spent = sum(s.metadata.get("spend", {}).get("calls", 0) for s in all_steps(run))
    assert run.metadata["spend"]["calls"] == spent
    synthesis = Client().get_artifact_version("rlm_synthesis").load()
    text = " ".join(synthesis.findings)
    assert "erin@falcon.example: Decision: Falcon launch moves to 12 June" in text
    assert "180,000 dollars" in text and "contamination" in text
    assert synthesis.chunks == 3 and synthesis.failed_chunks == 0 and 0 < synthesis.confidence <= 1
    assert "Evidence gaps" in Client().get_artifact_version("rlm_report").load()


def test_rlm_tools_are_typed_and_a_bad_regex_is_searched_literally() -> None:
    rlm = example_module("rlm_analysis", "rlm")
    emails = rlm.load_emails.entrypoint()
    literal = rlm.run_tool(rlm.RegexSearch(pattern="+6%", thought=""), emails)  # not a valid regex
    assert [e["subject"] for e in literal] == ["Budget impact of the launch delay"]
    assert len(rlm.run_tool(rlm.RegexSearch(pattern=r"FW-21\d", thought=""), emails)) == 5
    assert {e["sender"] for e in rlm.run_tool(rlm.BySender(sender="erin@falcon.example", thought=""), emails)} == {
        "erin@falcon.example"}
    received = rlm.run_tool(rlm.ByRecipient(recipient="dan@falcon.example", thought=""), emails)
    assert received and all("dan@falcon.example" in e["recipients"] for e in received)
    april = rlm.run_tool(rlm.ByDateRange(start="2024-04-01", end="2024-04-30", thought=""), emails)
    assert april and all(e["date"].startswith("2024-04") for e in april)


def test_rlm_call_budget_is_the_spend_budget(tmp_path: Path) -> None:
    config = tmp_path / "tight.yaml"
    config.write_text("parameters: {max_chunk_emails: 60}\nbudget: {spend: {calls: 5}}\n")
    result = runner.invoke(app, ["run", str(EXAMPLES / "rlm_analysis/rlm.py:rlm_analysis"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    run = Client().list_pipeline_runs(pipeline_name="rlm_analysis", limit=1)[0]
    chunks = [s for s in run.steps.values() if s.name == "analyze_chunk"]
    # three chunks planned; one that would start after the calls ran out is never started
    assert 1 <= len(chunks) <= 3 and not run.child_runs
    # a chunk starts with at most 4 calls left (5 minus the plan) and keeps one for its summary,
    # so one with evidence to follow stops for the budget before its loop would end by itself
    assert all(s.metadata["calls"] <= 4 for s in chunks)
    assert any(s.metadata["stopped_by"] == "spend budget" for s in chunks)
    synthesis = Client().get_artifact_version("rlm_synthesis").load()
    assert synthesis.chunks + synthesis.failed_chunks == 3


def test_import_unspool_never_imports_the_examples_dependencies() -> None:
    import subprocess
    import sys

    code = ("import sys, unspool; from unspool import Budget, spend_exempt, get_step_context; "
            "print(sorted(m for m in ('optuna', 'sklearn', 'pydantic_ai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_named_in_the_environment_runs_the_same_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # "test" is pydantic-ai's TestModel: schema-valid answers that know nothing of the corpus
    monkeypatch.setenv("DOC_SEARCH_MODEL", "test")
    monkeypatch.setenv("RLM_MODEL", "test")
    search = run_example("doc_search_agent/doc_search.py:doc_search")
    visits = [s for s in search.steps.values() if s.name == "traverse_node"]
    assert visits and all(s.metadata["spend"]["tokens"] > 0 for s in visits)
    rlm = run_example("rlm_analysis/rlm.py:rlm_analysis")
    assert rlm.steps["plan_chunks"].metadata["valid"] is False  # its plan is refused: even split
    chunks = [s for s in rlm.steps.values() if s.name == "analyze_chunk"]
    assert [s.metadata["emails"] for s in chunks] == [15, 15, 15, 15]
    assert all(s.metadata["stopped_by"] == "iterations" and s.metadata["calls"] == 7 for s in chunks)
