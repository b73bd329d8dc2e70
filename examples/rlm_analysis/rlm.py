"""Recursive document analysis (Recursive Language Model style) over a bundled e-mail corpus.

A planning step splits the corpus into 2..``max_chunks`` chunks, each with a sub-question.
Every chunk gets its own analysis step, all running at once; each runs a bounded model loop
(preview, choose a typed search tool, run it, reflect, summarise within an evidence budget)
whose model calls are charged to the run's spend budget. A chunk too large for one step is
split again by a child pipeline, as deep as ``Budget(max_depth=...)`` allows. A synthesis
step writes findings, confidence and evidence gaps, and an HTML report.

    unspool run examples/rlm_analysis/rlm.py:rlm_analysis --param max_chunks=4

Offline (the default) the model is pydantic-ai's ``FunctionModel`` running ``offline_model``;
``RLM_MODEL=openai:gpt-4o-mini`` (and the provider's API key) runs the same code on a real one.
"""

from __future__ import annotations

import html
import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart, UserPromptPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from unspool import (
    ArtifactConfig,
    ArtifactFuture,
    Budget,
    BudgetExceeded,
    StepFailedError,
    get_step_context,
    log_metadata,
    pipeline,
    spend_exempt,
    step,
)

EMAILS = Path(__file__).with_name("emails.json")
QUESTION = "Why was the Falcon launch delayed, who decided it, and what was the budget impact?"


class Email(TypedDict):
    id: str
    date: str
    sender: str
    recipients: list[str]
    subject: str
    body: str


class Chunk(TypedDict):
    lo: int  # emails[lo:hi] of the date-sorted corpus
    hi: int
    sub_question: str


class Finding(TypedDict):
    sub_question: str
    emails: int
    findings: list[str]
    evidence_ids: list[str]
    confidence: float
    gaps: list[str]


# -- what the model answers with -------------------------------------------------------------------

class PlannedChunk(BaseModel):
    start: str  # ISO dates, inclusive
    end: str
    sub_question: str


class Plan(BaseModel):
    chunks: list[PlannedChunk]


class RegexSearch(BaseModel):
    """Search subject and body with a regular expression (a bad one is searched literally)."""

    pattern: str
    thought: str


class BySender(BaseModel):
    sender: str
    thought: str


class ByRecipient(BaseModel):
    recipient: str
    thought: str


class ByDateRange(BaseModel):
    start: str
    end: str
    thought: str


class Count(BaseModel):
    """How many e-mails match a pattern (adds no evidence)."""

    pattern: str
    thought: str


class Done(BaseModel):
    thought: str


Action = RegexSearch | BySender | ByRecipient | ByDateRange | Count | Done


class Summary(BaseModel):
    findings: list[str]
    evidence_ids: list[str]
    confidence: float
    gaps: list[str]


planner: Agent[None, Plan] = Agent(output_type=Plan, instructions=(
    "Split the e-mails into date ranges that can be analysed separately, each with a sub-question."))
analyst: Agent[None, Action] = Agent(output_type=[RegexSearch, BySender, ByRecipient, ByDateRange, Count, Done],
                                     instructions="Pick the next search that helps answer the question, or Done.")
summariser: Agent[None, Summary] = Agent(output_type=Summary, instructions=(
    "Answer the question from the evidence only; list what the evidence does not cover as gaps."))


def model() -> Model | str:
    """``RLM_MODEL`` (e.g. ``openai:gpt-4o-mini``, key in the provider's variable) or offline."""
    return os.environ.get("RLM_MODEL") or FunctionModel(offline_model, model_name="offline-rlm")


T = TypeVar("T")


def ask(agent: Agent[None, T], prompt: str) -> T:
    """One model call, charged to the run's spend budget."""
    result = agent.run_sync(prompt, model=model())
    usage = result.usage
    get_step_context().spend(calls=usage.requests, tokens=usage.input_tokens + usage.output_tokens)
    return result.output


# -- typed tools -------------------------------------------------------------------------------------

def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.I)
    except re.error:  # literal fallback
        return re.compile(re.escape(pattern), re.I)


def run_tool(action: Action, emails: list[Email]) -> list[Email]:
    if isinstance(action, RegexSearch | Count):
        rx = _compile(action.pattern)
        return [e for e in emails if rx.search(e["subject"] + " " + e["body"])]
    if isinstance(action, BySender):
        return [e for e in emails if e["sender"] == action.sender]
    if isinstance(action, ByRecipient):
        return [e for e in emails if action.recipient in e["recipients"]]
    if isinstance(action, ByDateRange):
        return [e for e in emails if action.start <= e["date"] <= action.end]
    return []


def stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 5 and w not in {"which", "there", "about"}}


def relevance(email: Email, question: str) -> int:
    return len(stems(question) & stems(email["subject"] + " " + email["body"]))


# -- the offline model -----------------------------------------------------------------------------

def offline_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Deterministic stand-in for an LLM: plans by month (or halves); searches the question's
    words, then what the most frequent sender of the evidence sent and received, counts delay
    mentions, looks at the days after the latest evidence, and stops."""
    prompt = "\n".join(p.content for m in messages for p in getattr(m, "parts", [])
                       if isinstance(p, UserPromptPart) and isinstance(p.content, str))

    def field(name: str) -> str:
        found = re.search(rf"^{name}: (.*)$", prompt, re.M)
        return found.group(1) if found else ""

    names = {t.name.split("final_result_")[-1]: t.name for t in info.output_tools}
    question = field("Question")
    evidence = re.findall(r"^- (m\d+) (\S+) (\S+): (.*)$", prompt, re.M)
    if "final_result" in names and "Plan" in prompt.split("\n", 1)[0]:
        months = re.findall(r"^month (\S+) (\S+) (\S+) (\d+)$", prompt, re.M)
        limit = int(field("Max chunks"))
        if len(months) >= 2:
            ranges = [(m[1], m[2]) for m in months][:limit]
            ranges[-1] = (ranges[-1][0], months[-1][2])
        else:
            ranges = [(field("First"), field("Median")), (field("After median"), field("Last"))]
        out: dict[str, Any] = {"chunks": [{"start": a, "end": b, "sub_question": f"{question} [{a} to {b}]"}
                                          for a, b in ranges]}
        return ModelResponse(parts=[ToolCallPart(names["final_result"], json.dumps(out))])
    if "final_result" in names:  # the summary
        ranked = sorted(evidence, key=lambda e: (-len(stems(question) & stems(e[3])), e[1]))[:3]
        covered = set().union(*(stems(e[3]) for e in evidence)) if evidence else set()
        out = {"findings": [f"{d} {s}: {text}" for _, d, s, text in sorted(ranked, key=lambda e: e[1])],
               "evidence_ids": [e[0] for e in ranked], "confidence": round(min(0.9, 0.2 + 0.12 * len(evidence)), 2),
               "gaps": sorted(stems(question) - covered)}
        return ModelResponse(parts=[ToolCallPart(names["final_result"], json.dumps(out))])
    done = re.findall(r"^step (\w+)", prompt, re.M)
    senders = [e[2] for e in evidence]
    if not done:
        words = sorted(stems(question) - {"falco"})
        call: tuple[str, dict[str, Any]] = ("RegexSearch", {"pattern": rf"\b({'|'.join(words)})\w*", "thought": "search the question's words"})
    elif len(done) == 1 and senders:
        top = max(sorted(set(senders)), key=senders.count)
        call = ("BySender", {"sender": top, "thought": f"{top} writes most of the evidence"})
    elif len(done) == 2 and senders:
        top = max(sorted(set(senders)), key=senders.count)
        call = ("ByRecipient", {"recipient": top, "thought": f"what did {top} receive?"})
    elif len(done) == 3 and evidence:
        call = ("Count", {"pattern": r"\b(delay|slip|postpon)\w*", "thought": "how often is a delay mentioned?"})
    elif len(done) == 4 and evidence:
        last = max(e[1] for e in evidence)
        call = ("ByDateRange", {"start": last, "end": last[:8] + f"{min(int(last[8:]) + 3, 28):02d}",
                                "thought": "replies right after the latest evidence"})
    else:
        call = ("Done", {"thought": "enough evidence" if evidence else "nothing relevant in this chunk"})
    return ModelResponse(parts=[ToolCallPart(names[call[0]], json.dumps(call[1]))])


# -- steps -------------------------------------------------------------------------------------------

@step
def load_emails() -> Annotated[list[Email], "emails"]:
    return sorted(json.loads(EMAILS.read_text()), key=lambda e: (e["date"], e["id"]))


def even_split(lo: int, hi: int, parts: int, question: str) -> list[Chunk]:
    bounds = [lo + (hi - lo) * i // parts for i in range(parts + 1)]
    return [Chunk(lo=a, hi=b, sub_question=question) for a, b in zip(bounds, bounds[1:])]


@step
def plan_chunks(question: str, emails: list[Email], lo: int, hi: int, max_chunks: int) -> Annotated[list[Chunk], "chunks"]:
    """Ask the model for date ranges; keep them only if they are 2..max_chunks ordered,
    non-empty ranges covering every e-mail, else split evenly."""
    part = emails[lo:hi]
    months: dict[str, list[str]] = {}
    for e in part:
        months.setdefault(e["date"][:7], []).append(e["date"])
    median = part[len(part) // 2 - 1]["date"]
    after = next((e["date"] for e in part if e["date"] > median), median)
    prompt = "\n".join([
        "Plan the analysis.", f"Question: {question}", f"Max chunks: {max_chunks}",
        f"First: {part[0]['date']}", f"Median: {median}", f"After median: {after}", f"Last: {part[-1]['date']}",
        *(f"month {m} {d[0]} {d[-1]} {len(d)}" for m, d in months.items()),
    ])
    plan = ask(planner, prompt)
    chunks, cursor = [], lo
    for c in plan.chunks:
        end = next((i for i in range(cursor, hi) if emails[i]["date"] > c.end), hi)
        if end > cursor and emails[cursor]["date"] >= c.start:
            chunks.append(Chunk(lo=cursor, hi=end, sub_question=c.sub_question))
        cursor = end
    valid = 2 <= len(chunks) <= max_chunks and cursor == hi and chunks[0]["lo"] == lo
    log_metadata({"planned": len(plan.chunks), "valid": valid})
    return chunks if valid else even_split(lo, hi, min(max(2, max_chunks), hi - lo), question)


def _lines(evidence: dict[str, Email]) -> list[str]:
    return [f"- {e['id']} {e['date']} {e['sender']}: {e['subject']}. {e['body']}" for e in evidence.values()]


@step
def analyze_chunk(chunk: Chunk, emails: list[Email], max_iterations: int, evidence_budget: int) -> tuple[
    Annotated[Finding, "finding"], Annotated[list[dict[str, Any]], "trajectory"]
]:
    """A bounded loop: preview, choose a tool, run it, reflect; then summarise the evidence."""
    started, ctx = time.time(), get_step_context()
    part, question = emails[chunk["lo"]:chunk["hi"]], chunk["sub_question"]
    preview = [f"- {e['id']} {e['date']} {e['sender']} -> {', '.join(e['recipients'])}: {e['subject']}" for e in part]
    evidence: dict[str, Email] = {}
    trajectory: list[dict[str, Any]] = []
    stop = "iterations"
    for _ in range(max_iterations):
        left = (ctx.spend_remaining or {}).get("calls", float("inf"))
        if left < 2:  # keep one call for the summary
            stop = "spend budget"
            break
        history = [f"step {t['tool']} {json.dumps(t['args'])} -> {t['matches']} matches" for t in trajectory]
        action = ask(analyst, "\n".join([f"Question: {question}", "Preview:", *preview, "History:", *history,
                                         "Evidence:", *_lines(evidence)]))
        if isinstance(action, Done):
            stop = "done"
            trajectory.append({"tool": "Done", "args": {}, "matches": 0, "thought": action.thought})
            break
        matches = run_tool(action, part)
        if not isinstance(action, Count):
            for e in sorted(matches, key=lambda e: -relevance(e, question)):
                if len(evidence) < evidence_budget and relevance(e, question) > 0:
                    evidence.setdefault(e["id"], e)
        args = action.model_dump(exclude={"thought"})
        trajectory.append({"tool": type(action).__name__, "args": args, "matches": len(matches), "thought": action.thought})
    summary = ask(summariser, "\n".join([f"Question: {question}", "Evidence:", *_lines(evidence)]))
    log_metadata({"calls": ctx.spent.get("calls", 0), "iterations": len(trajectory), "emails": len(part),
                  "matches": sum(t["matches"] for t in trajectory), "evidence": len(evidence),
                  "duration_s": round(time.time() - started, 3), "stopped_by": stop})
    finding = Finding(sub_question=question, emails=len(part), findings=summary.findings,
                      evidence_ids=[i for i in summary.evidence_ids if i in evidence],
                      confidence=max(0.0, min(1.0, summary.confidence)), gaps=summary.gaps)
    return finding, trajectory


def merge(parts: list[Finding], question: str) -> Finding:
    """Findings of several chunks as one: a gap only if no chunk covered it."""
    emails = sum(p["emails"] for p in parts)
    return Finding(
        sub_question=question, emails=emails,
        findings=[f for p in parts for f in p["findings"]], evidence_ids=[i for p in parts for i in p["evidence_ids"]],
        confidence=round(sum(p["confidence"] * p["emails"] for p in parts) / max(1, emails), 2),
        gaps=sorted(set.intersection(*(set(p["gaps"]) for p in parts)) if parts else stems(question)),
    )


@step
def merge_findings(parts: list[Finding], question: str) -> Annotated[Finding, "finding"]:
    return merge(parts, question)


class Synthesis(BaseModel):
    question: str
    findings: list[str]
    confidence: float
    evidence_gaps: list[str]
    chunks: int
    failed_chunks: int


@step
def synthesize(question: str, parts: list[Finding], failed_chunks: int) -> Annotated[
    Synthesis, ArtifactConfig(name="rlm_synthesis")
]:
    merged = merge(parts, question)
    findings = sorted(dict.fromkeys(merged["findings"]))  # each starts with its date
    coverage = 1 - len(merged["gaps"]) / max(1, len(stems(question)))
    result = Synthesis(question=question, findings=findings, evidence_gaps=merged["gaps"], chunks=len(parts),
                       confidence=round(merged["confidence"] * coverage * (1 - failed_chunks / max(1, len(parts) + failed_chunks)), 2),
                       failed_chunks=failed_chunks)
    log_metadata({"findings": len(findings), "confidence": result.confidence, "gaps": len(result.evidence_gaps)})
    return result


@step
def html_report(result: Synthesis) -> Annotated[str, ArtifactConfig(name="rlm_report")]:
    e = html.escape
    rows = "".join(f"<li>{e(f)}</li>" for f in result.findings) or "<li>nothing found</li>"
    return (f"<html><body><h1>{e(result.question)}</h1><p>confidence {result.confidence:.2f} from "
            f"{result.chunks} chunks ({result.failed_chunks} failed)</p><h2>Findings</h2><ul>{rows}</ul>"
            f"<h2>Evidence gaps</h2><p>{e(', '.join(result.evidence_gaps)) or 'none'}</p></body></html>")


# -- pipelines ---------------------------------------------------------------------------------------

def analyze_all(emails: ArtifactFuture, chunks: ArtifactFuture, question: str, max_chunk_emails: int,
                max_iterations: int, evidence_budget: int) -> tuple[list[ArtifactFuture], int]:
    """Start every chunk at once (a step each, or a child pipeline for a large one), then collect.
    The count returned is of chunks that failed or never started."""
    started: list[Any] = []
    planned = chunks.load()
    try:
        for i, c in enumerate(planned):
            if c["hi"] - c["lo"] > max_chunk_emails:
                try:
                    started.append(analyze_part.submit(
                        question=c["sub_question"], lo=c["lo"], hi=c["hi"], max_chunk_emails=max_chunk_emails,
                        max_iterations=max_iterations, evidence_budget=evidence_budget))
                    continue
                except BudgetExceeded as exc:
                    if exc.limit != "max_depth":
                        raise
                    # as deep as Budget(max_depth=...) allows: analyse it whole
            started.append(analyze_chunk.submit(chunks.chunk(i), emails, max_iterations, evidence_budget))
    except BudgetExceeded:  # the spend or step budget is used up: no further chunk starts
        pass
    findings, failed = [], len(planned) - len(started)
    for future in started:
        try:
            out = future.result()
        except (StepFailedError, BudgetExceeded):  # a failed chunk (or child run); the rest go on
            failed += 1
            continue
        findings.append(out[0] if isinstance(out, tuple) else out)
    return findings, failed


@pipeline(dynamic=True)
def analyze_part(question: str, lo: int, hi: int, max_chunk_emails: int, max_iterations: int, evidence_budget: int):
    """A chunk too large for one step: plan it again and analyse its parts (a child run)."""
    emails = load_emails()
    chunks = plan_chunks(question, emails, lo, hi, 2)
    findings, _ = analyze_all(emails, chunks, question, max_chunk_emails, max_iterations, evidence_budget)
    with spend_exempt():
        return merge_findings(findings, question)


@pipeline(
    dynamic=True,
    depends_on=[analyze_chunk],
    budget=Budget(max_steps=60, max_depth=2, max_duration_s=300, spend={"calls": 120, "tokens": 200_000}),
)
def rlm_analysis(
    question: str = QUESTION,
    max_chunks: int = 4,
    max_chunk_emails: int = 16,
    max_iterations: int = 6,
    evidence_budget: int = 6,
) -> None:
    emails = load_emails()
    n = len(emails.load())
    chunks = plan_chunks(question, emails, 0, n, max(2, min(max_chunks, 8)))
    findings, failed = analyze_all(emails, chunks, question, max_chunk_emails, max_iterations, evidence_budget)
    with spend_exempt():  # no model calls: runs even when the call budget is used up
        html_report(synthesize(question, findings, failed))
