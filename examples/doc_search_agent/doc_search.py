"""Hierarchical document search: traversal agents whose steps are created at run time.

A query is classified simple or deep. Simple queries get a scored keyword search. Deep ones
start up to ``max_agents`` traversal agents on the best-matching documents; each visit of a
document is a ``traverse_node`` step in which a pydantic-ai agent decides "answer found" or
"go deeper to these neighbours", and the pipeline body turns that decision into the next
steps. Limits come from unspool's ``Budget`` (steps, time, tokens), not from counters.

    unspool run examples/doc_search_agent/doc_search.py:doc_search \
        --param query="What was the root cause of the checkout outage and what fix prevents it from recurring?"

Offline (the default) the agent runs on pydantic-ai's ``FunctionModel`` with the rules in
``offline_model``; ``DOC_SEARCH_MODEL=openai:gpt-4o-mini`` (and the provider's API key) runs
the same code on a real model.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, NamedTuple, TypedDict

from pydantic import BaseModel, Field
from pydantic_ai import Agent, ModelRetry, RunContext
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

CORPUS = Path(__file__).with_name("corpus.json")
LINK_PRIORITY = {"leads_to": 3, "prerequisite": 2, "references": 1, "related": 0}
STOPWORDS = set(
    ["a", "an", "and", "are", "as", "at", "be", "by", "did", "do", "does", "for", "from", "how", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "what", "when", "where", "which", "who", "why", "will", "with", "it's"]
)


class Link(TypedDict):
    type: str
    target: str


class Document(TypedDict):
    id: str
    title: str
    text: str
    links: list[Link]


class Decision(BaseModel):
    """The agent's structured output for one document."""

    has_answer: bool
    answer: str | None = None
    traverse_to: list[str] = Field(default_factory=list, description="ids of linked documents to explore next")
    reasoning: str


class NodeVisit(BaseModel):
    node_id: str
    agent: int
    depth: int
    decision: Decision
    tokens: int


class Hit(TypedDict):
    id: str
    title: str
    score: float


def terms(text: str) -> set[str]:
    """Crude stems: lower-case words without stop words, cut to six letters."""
    return {w[:6] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS and len(w) > 2}


def keyword_scores(query: str, docs: list[Document]) -> list[Hit]:
    wanted = terms(query)
    hits = [
        Hit(id=d["id"], title=d["title"],
            score=2 * len(wanted & terms(d["title"])) + len(wanted & terms(d["text"])))
        for d in docs
    ]
    return sorted((h for h in hits if h["score"] > 0), key=lambda h: (-h["score"], h["id"]))


# -- the agent -------------------------------------------------------------------------------------

INSTRUCTIONS = (
    "You explore a graph of internal documents to answer a question. You see one document, the "
    "notes gathered on the way to it and its links. If the document and the notes answer the "
    "question, set has_answer and write the answer. Otherwise choose the most promising linked "
    "document ids (only ids from the list) in traverse_to. Put the facts you learnt in reasoning."
)

agent: Agent[set[str], Decision] = Agent(output_type=Decision, deps_type=set, instructions=INSTRUCTIONS)


@agent.output_validator
def _only_linked_ids(ctx: RunContext[set[str]], decision: Decision) -> Decision:
    unknown = sorted(set(decision.traverse_to) - ctx.deps)
    if unknown:
        raise ModelRetry(f"traverse_to may only name linked documents; {unknown} are not links")
    return decision


def offline_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Deterministic stand-in for an LLM, written for the bundled corpus.

    It answers when one sentence of the document covers 60% of the question's terms (the
    notes from the path are prepended to the answer); otherwise it follows the unexplored
    links ranked by link type and by how many question terms their titles share, up to the
    number the prompt allows.
    """
    prompt = "\n".join(
        p.content for m in messages for p in getattr(m, "parts", [])
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    )
    question = re.search(r"^Question: (.*)$", prompt, re.M).group(1)  # type: ignore[union-attr]
    notes = re.findall(r"^Note: (.*)$", prompt, re.M)
    text = re.search(r"^Text: (.*)$", prompt, re.M).group(1)  # type: ignore[union-attr]
    links = re.findall(r"^- (\S+) \| (\S+) \| (.*?)( \(explored\))?$", prompt, re.M)
    limit = int(re.search(r"at most (\d+) links", prompt).group(1))  # type: ignore[union-attr]
    wanted = terms(question)
    notes = [n for n in notes if wanted & terms(n)]
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]
    best = max(sentences, key=lambda s: len(wanted & terms(s)), default="")
    covered = wanted & terms(best)
    if wanted and len(covered) >= 0.6 * len(wanted):
        decision: dict[str, Any] = {"has_answer": True, "answer": " ".join([*notes, best]),
                                    "reasoning": f"one sentence covers {len(covered)}/{len(wanted)} question terms"}
    else:
        fresh = [link for link in links if not link[3] and link[2] != "(missing)"]
        ranked = sorted(fresh, key=lambda link: -(LINK_PRIORITY.get(link[1], 0) + 2 * len(wanted & terms(link[2]))))
        decision = {"has_answer": False, "traverse_to": [link[0] for link in ranked[:limit]],
                    "reasoning": best if covered else "nothing relevant here"}
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, json.dumps(decision))])


def model() -> Model | str:
    """``DOC_SEARCH_MODEL`` (e.g. ``openai:gpt-4o-mini``, key in the provider's variable) or offline."""
    return os.environ.get("DOC_SEARCH_MODEL") or FunctionModel(offline_model, model_name="offline-doc-search")


# -- steps -------------------------------------------------------------------------------------------

@step
def load_corpus() -> Annotated[list[Document], "corpus"]:
    return json.loads(CORPUS.read_text())


@step
def classify_query(query: str) -> Annotated[str, "query_kind"]:
    """Deep when the question asks for reasons or joins several questions; else simple."""
    q = f" {query.lower()} "
    deep = any(w in q for w in (" why ", " root cause", " what led", " and what ", " and how ")) or len(query.split()) > 12
    return "deep" if deep else "simple"


@step
def keyword_search(query: str, docs: list[Document], top_k: int = 5) -> Annotated[list[Hit], "keyword_hits"]:
    hits = keyword_scores(query, docs)[:top_k]
    log_metadata({"hits": len(hits)})
    return hits


@step
def pick_seeds(query: str, docs: list[Document], max_agents: int) -> Annotated[list[str], "seeds"]:
    """The documents whose titles match the question best, hubs (most links) first."""
    wanted = terms(query)
    ranked = sorted(docs, key=lambda d: (-len(wanted & terms(d["title"])), -len(d["links"]), d["id"]))
    return [d["id"] for d in ranked[:max_agents] if wanted & terms(d["title"])]


class Todo(NamedTuple):
    doc_id: str
    agent: int
    depth: int
    notes: list[str]  # what the agents learnt on the way here


@step
def traverse_node(
    doc: Document, query: str, agent_id: int, depth: int, notes: list[str],
    link_titles: dict[str, str], explored: list[str], max_neighbours: int, fail: bool = False,
) -> Annotated[NodeVisit, "visit"]:
    """One agent looks at one document and decides: answer, or which links to follow."""
    if fail:  # stands in for a provider error or a malformed answer
        raise RuntimeError(f"agent {agent_id} failed on {doc['id']} (listed in fail_nodes)")
    links = "\n".join(
        f"- {link['target']} | {link['type']} | {link_titles.get(link['target'], '(missing)')}"
        + (" (explored)" if link["target"] in explored else "")
        for link in doc["links"]
    )
    prompt = "\n".join([
        f"Question: {query}", *(f"Note: {n}" for n in notes),
        f"Document: {doc['id']} ({doc['title']})", f"Text: {doc['text']}",
        "Links (id | type | title):", links or "(none)",
        f"Follow at most {max_neighbours} links.",
    ])
    result = agent.run_sync(prompt, model=model(), deps={link["target"] for link in doc["links"]})
    usage = result.usage
    tokens = usage.input_tokens + usage.output_tokens
    get_step_context().spend(tokens=tokens, calls=usage.requests)
    decision = result.output
    log_metadata({"node": doc["id"], "agent": agent_id, "depth": depth, "has_answer": decision.has_answer,
                  "traverse_to": decision.traverse_to, "tokens": tokens})
    return NodeVisit(node_id=doc["id"], agent=agent_id, depth=depth, decision=decision, tokens=tokens)


class SearchResult(BaseModel):
    query: str
    kind: str
    answers: list[str]
    explored: list[str]
    agents: int
    max_depth_reached: int
    failed_nodes: list[str]
    stopped_by: str | None
    hits: list[dict[str, Any]]


@step
def aggregate(
    query: str, kind: str, visits: list[NodeVisit], hits: list[Hit], agents: int,
    failed_nodes: list[str], stopped_by: str | None,
) -> Annotated[SearchResult, ArtifactConfig(name="doc_search_result")]:
    answers = list(dict.fromkeys(v.decision.answer for v in visits if v.decision.has_answer and v.decision.answer))
    result = SearchResult(
        query=query, kind=kind, answers=answers, explored=[v.node_id for v in visits], agents=agents,
        max_depth_reached=max((v.depth for v in visits), default=0), failed_nodes=failed_nodes,
        stopped_by=stopped_by, hits=[dict(h) for h in hits],
    )
    log_metadata({"answers": len(answers), "explored": len(visits), "tokens": sum(v.tokens for v in visits)})
    return result


@step
def html_report(result: SearchResult) -> Annotated[str, ArtifactConfig(name="doc_search_report")]:
    e = html.escape
    items = "".join(f"<li>{e(a)}</li>" for a in result.answers) or "<li>no answer found</li>"
    hits = "".join(f"<li>{e(h['title'])} ({h['score']:g})</li>" for h in result.hits)
    return (
        f"<html><body><h1>Search: {e(result.query)}</h1><p>kind: {result.kind}, agents: {result.agents}, "
        f"documents explored: {len(result.explored)}, deepest level: {result.max_depth_reached}"
        f"{', stopped by ' + e(result.stopped_by) if result.stopped_by else ''}</p>"
        f"<h2>Answers</h2><ul>{items}</ul>"
        + (f"<h2>Keyword hits</h2><ol>{hits}</ol>" if hits else "")
        + f"<h2>Explored</h2><p>{e(', '.join(result.explored)) or '-'}</p>"
        + (f"<h2>Failed</h2><p>{e(', '.join(result.failed_nodes))}</p>" if result.failed_nodes else "")
        + "</body></html>"
    )


# -- pipeline ----------------------------------------------------------------------------------------

@pipeline(
    dynamic=True,
    depends_on=[traverse_node, keyword_search, pick_seeds],
    budget=Budget(max_steps=60, max_duration_s=300, spend={"tokens": 40_000}),
)
def doc_search(
    query: str = "What was the root cause of the checkout outage and what fix prevents it from recurring?",
    max_agents: int = 3,
    max_depth: int = 3,
    max_neighbours: int = 2,
    fail_nodes: list[str] | None = None,
    stop_on_answer: bool = True,
) -> None:
    max_agents, max_depth, max_neighbours = min(max_agents, 5), min(max_depth, 5), min(max_neighbours, 4)
    corpus = load_corpus()
    docs: list[Document] = corpus.load()  # for decisions; steps get their document by .chunk()
    index = {d["id"]: i for i, d in enumerate(docs)}
    titles = {d["id"]: d["title"] for d in docs}  # dangling link targets have none
    kind = classify_query(query).load()
    if kind == "simple":
        hits = keyword_search(query, corpus)
        html_report(aggregate(query, kind, [], hits, 0, [], None))
        return

    seeds: list[str] = pick_seeds(query, corpus, max_agents).load()
    visited = set(seeds)  # one visited set for every branch: no document is paid for twice
    frontier = [Todo(doc_id, agent, 0, []) for agent, doc_id in enumerate(seeds)]
    visits: list[ArtifactFuture] = []
    failed: list[str] = []
    stopped_by = None
    answered = False
    try:
        while frontier and not (stop_on_answer and answered):
            started = [  # every node of this level runs at once
                (todo, traverse_node.submit(
                    doc=corpus.chunk(index[todo.doc_id]), query=query, agent_id=todo.agent, depth=todo.depth,
                    notes=todo.notes, link_titles=titles, explored=sorted(visited),
                    max_neighbours=max_neighbours, fail=todo.doc_id in (fail_nodes or []),
                ))
                for todo in frontier
            ]
            frontier = []
            for todo, future in started:
                try:
                    decision = future.load().decision
                except StepFailedError:  # recorded as a failed step; the other branches go on
                    failed.append(todo.doc_id)
                    continue
                visits.append(future.result())
                answered = answered or decision.has_answer
                if decision.has_answer or todo.depth >= max_depth:
                    continue
                for target in decision.traverse_to[:max_neighbours]:  # dangling ids are dropped
                    if target in index and target not in visited:
                        visited.add(target)
                        frontier.append(Todo(target, todo.agent, todo.depth + 1, [*todo.notes, decision.reasoning]))
    except BudgetExceeded as exc:  # the framework said stop: report what was found so far
        stopped_by = str(exc)
    with spend_exempt():  # the report costs no tokens: it runs even when the tokens ran out
        html_report(aggregate(query, kind, visits, [], len(seeds), failed, stopped_by))
