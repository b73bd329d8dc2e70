"""Spend budgets: steps charge user-named amounts; runs add them up and stop calling steps."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unspool import (
    Budget,
    BudgetExceeded,
    Client,
    RunFailedError,
    StepRetryConfig,
    get_step_context,
    pipeline,
    spend_exempt,
    step,
)
from unspool._cli import app


@step(enable_cache=False)
def llm_call(tokens: int, usd: float = 0.0) -> int:
    get_step_context().spend(tokens=tokens, usd=usd)
    return tokens


@step(enable_cache=False, runtime="isolated")
def isolated_call(tokens: int) -> int:
    get_step_context().spend(tokens=tokens)
    return tokens


def _last_run(name: str = "p"):
    return Client().list_pipeline_runs(pipeline_name=name, limit=1)[0]


def test_charges_are_recorded_per_step_and_summed_per_run() -> None:
    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 1_000, "usd": 1.0}))
    def p() -> None:
        llm_call(100, 0.1)
        llm_call(250, 0.2)

    run = p()
    assert run.status.value == "completed"
    assert run.steps["llm_call"].metadata["spend"] == {"tokens": 100, "usd": 0.1}
    assert run.steps["llm_call_2"].metadata["spend"] == {"tokens": 250, "usd": 0.2}
    assert run.metadata["spend"] == {"tokens": 350, "usd": 0.3}
    assert run.metadata["budget_used"]["spend"] == {"tokens": 350, "usd": 0.3}
    assert run.config["budget"]["spend"] == {"tokens": 1_000, "usd": 1.0}


def test_spend_is_recorded_without_a_budget_too() -> None:
    @pipeline(dynamic=True)
    def p() -> None:
        llm_call(7)

    run = p()
    assert run.metadata["spend"] == {"tokens": 7, "usd": 0.0}
    assert "budget_used" not in run.metadata


def test_once_a_limit_is_reached_the_next_step_call_raises_before_it_starts() -> None:
    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 500}))
    def p() -> None:
        for _ in range(10):
            llm_call(200)

    with pytest.raises(BudgetExceeded, match=r"spend.tokens=500 reached: 600 spent") as info:
        p()
    assert (info.value.limit, info.value.value, info.value.used) == ("spend.tokens", 500, 600)
    run = _last_run()
    assert run.status.value == "failed"
    assert len(run.steps) == 3  # 200, 400, 600: the fourth call never became a step
    assert run.metadata["spend"] == {"tokens": 600, "usd": 0.0}


def test_the_exception_can_be_caught_to_finish_gracefully() -> None:
    @pipeline(dynamic=True, budget=Budget(spend={"usd": 0.25}))
    def p() -> int:
        calls = 0
        try:
            while True:
                llm_call(1, 0.1)
                calls += 1
        except BudgetExceeded:
            pass
        return calls

    run = p()
    assert run.status.value == "completed"
    assert len(run.steps) == 3
    assert run.metadata["spend"]["usd"] == pytest.approx(0.3)


def test_charges_of_an_isolated_step_travel_back_in_its_result() -> None:
    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 100}))
    def p() -> None:
        isolated_call(60)
        isolated_call(60)
        isolated_call(60)

    with pytest.raises(BudgetExceeded):
        p()
    run = _last_run()
    assert [s.metadata["spend"] for s in run.steps.values()] == [{"tokens": 60}, {"tokens": 60}]
    assert run.metadata["spend"] == {"tokens": 120}


def test_child_runs_count_towards_the_parent_and_the_parent_limit_stops_them() -> None:
    @pipeline(dynamic=True)
    def child(tokens: int) -> None:
        llm_call(tokens)
        llm_call(tokens)

    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 250}))
    def parent() -> None:
        child(100)
        child(100)  # starts at 200 spent, its second call finds 300 >= 250

    with pytest.raises(BudgetExceeded):
        parent()
    run = _last_run("parent")
    first, second = sorted(run.child_runs, key=lambda r: r.invocation_id)
    assert first.metadata["spend"] == {"tokens": 200, "usd": 0.0}
    assert second.metadata["spend"] == {"tokens": 100, "usd": 0.0}
    assert len(second.steps) == 1
    assert run.metadata["spend"] == {"tokens": 300, "usd": 0.0}


def test_a_child_call_is_refused_once_the_limit_is_reached() -> None:
    @pipeline(dynamic=True)
    def child() -> None:
        llm_call(1)

    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 10}))
    def parent() -> None:
        llm_call(10)
        child()

    with pytest.raises(BudgetExceeded):
        parent()
    assert _last_run("parent").child_runs == []


def test_a_step_sees_what_is_left_and_its_own_charges() -> None:
    seen: list[dict[str, float] | None] = []

    @step(enable_cache=False)
    def careful() -> None:
        ctx = get_step_context()
        seen.append(ctx.budget_remaining["spend"])
        ctx.spend(tokens=30)
        seen.append(ctx.spend_remaining)

    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 100}))
    def p() -> None:
        llm_call(50)
        careful()

    p()
    assert seen == [{"tokens": 50}, {"tokens": 20}]


def test_charges_of_failed_attempts_count() -> None:
    @step(enable_cache=False, retry=StepRetryConfig(max_retries=1))
    def flaky() -> None:
        get_step_context().spend(calls=1)
        raise RuntimeError("model unavailable")

    @pipeline(dynamic=True)
    def p() -> None:
        flaky.submit()

    with pytest.raises(RunFailedError):
        p()
    run = _last_run()
    assert run.steps["flaky"].status.value == "failed"
    assert run.steps["flaky"].metadata["spend"] == {"calls": 2}
    assert run.metadata["spend"] == {"calls": 2}


def test_bad_limits_and_amounts_are_errors() -> None:
    with pytest.raises(ValueError, match="positive number"):
        Budget(spend={"tokens": 0})
    with pytest.raises(ValueError, match="identifiers"):
        Budget(spend={"not a name": 1})

    @step(enable_cache=False)
    def negative() -> None:
        get_step_context().spend(tokens=-1)

    @pipeline(dynamic=True)
    def p() -> None:
        negative.submit()

    with pytest.raises(RunFailedError):
        p()
    assert "non-negative" in _last_run().steps["negative"].error["message"]


def test_config_file_and_runs_show(tmp_path: Path) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text(
        "from unspool import get_step_context, pipeline, step\n\n"
        "@step(enable_cache=False)\n"
        "def call(tokens: int) -> None:\n"
        "    get_step_context().spend(tokens=tokens, usd=0.01)\n\n"
        "@pipeline(dynamic=True)\n"
        "def agent() -> None:\n"
        "    call(1200)\n"
        "    call(800)\n"
    )
    config = tmp_path / "run.yaml"
    config.write_text("budget:\n  max_steps: 10\n  spend: {tokens: 200000, usd: 0.5}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["run", f"{flows}:agent", "--config", str(config)])
    assert result.exit_code == 0, result.output
    run = _last_run("agent")
    assert run.metadata["spend"] == {"tokens": 2000, "usd": 0.02}
    shown = runner.invoke(app, ["runs", "show", run.id])
    assert shown.exit_code == 0, shown.output
    assert "tokens 2000/200000" in shown.output
    assert "usd 0.02/0.5" in shown.output


def test_steps_called_in_spend_exempt_still_run_and_still_count() -> None:
    @pipeline(dynamic=True, budget=Budget(spend={"tokens": 100}))
    def p() -> None:
        try:
            while True:
                llm_call(60)
        except BudgetExceeded:
            pass
        with spend_exempt():
            llm_call(5)  # the final report
        llm_call(1)  # outside the block the limit holds again

    with pytest.raises(BudgetExceeded):
        p()
    run = _last_run()
    assert [s.metadata["spend"]["tokens"] for s in run.steps.values()] == [60, 60, 5]
    assert run.metadata["spend"]["tokens"] == 125


def test_a_resumed_run_keeps_what_its_reused_steps_spent(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    path = tmp_path / "spender.py"
    path.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from unspool import Budget, get_step_context, pipeline, step

        @step
        def paid() -> int:
            get_step_context().spend(tokens=70)
            return 1

        @step
        def later(x: int) -> int:
            get_step_context().spend(tokens=20)
            if not Path({str(flag)!r}).exists():
                raise RuntimeError("not yet")
            return x

        @pipeline(dynamic=True, budget=Budget(spend={{"tokens": 100}}))
        def spender() -> None:
            later(paid())
    """))
    runner = CliRunner()
    assert runner.invoke(app, ["run", f"{path}:spender"]).exit_code == 1
    run = _last_run("spender")
    assert run.metadata["spend"] == {"tokens": 90}
    flag.touch()
    assert runner.invoke(app, ["runs", "resume", run.id]).exit_code == 0
    resumed = Client().get_pipeline_run(run.id)
    assert resumed.status.value == "completed"
    # paid: spent once, reused; later: its failed attempt and its new one both count
    assert resumed.metadata["spend"] == {"tokens": 110}
    assert resumed.steps["later"].metadata["spend"] == {"tokens": 40}
