"""The demo behind `make demo`: a small dynamic pipeline on the embedded stores."""

from __future__ import annotations

import os
import sys
from typing import Annotated

from unspool import ArtifactConfig, Client, pipeline, step


@step
def load_documents() -> list[str]:
    return [
        "unspool runs ordinary Python functions as tracked steps",
        "every output is a versioned artifact with lineage",
        "dynamic pipelines decide their DAG while they run",
    ]


@step
def count_words(document: str) -> int:
    print(f"counting words of {document[:30]!r}...")
    return len(document.split())


@step
def total(counts: list[int]) -> Annotated[int, ArtifactConfig(name="total_words", tags=["demo"])]:
    return sum(counts)


@pipeline(dynamic=True)
def word_count() -> None:
    docs = load_documents()
    counts = [count_words(docs.chunk(i)) for i, _ in enumerate(docs.load())]
    total(counts)


if __name__ == "__main__":
    run = word_count()
    result = Client().get_artifact_version("total_words")
    print(f"\nrun {run.name}: {run.status.value}, {len(run.steps)} steps")
    print(f"total_words version {result.version} = {result.load()}")
    cli = os.path.relpath(os.path.join(os.path.dirname(sys.executable), "unspool"))
    print(f"stores: {Client().artifact_root.rsplit(os.sep, 1)[0]}")
    print(f"inspect it with: {cli} runs show {run.id}")
    print(f"           and: {cli} runs dag {run.id}  /  {cli} logs {run.id} count_words_2")
    print(f"watch it in the dashboard: {cli} dashboard   then open http://127.0.0.1:8237/#/runs/{run.id}")
