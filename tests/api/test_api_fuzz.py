"""Property-based fuzzing of every REST route from the server's own
/openapi.json (schemathesis on hypothesis), against `citelink serve` in a
process of its own: valid requests and requests that break the schema (wrong
types, missing fields, junk parameters). 0 answers >= 500; every 4xx is JSON
with a `detail`.

The default run is a small derandomized slice; `pytest -m slow` sends more
than 10,000 requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as fuzz_settings
from hypothesis.errors import Unsatisfiable

from tests.support.processes import citelink_serve
from tests.support.world import World


@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


def problem_with(response: requests.Response) -> str | None:
    """What is wrong with an answer, if anything."""
    if response.status_code >= 500:
        return "server error"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            return "not JSON"
        if not isinstance(body, dict) or not isinstance(body.get("detail"), str):
            return "no detail"
        if not body["detail"]:
            return "empty detail"
    return None


def fuzz(base_url: str, doc: dict, headers: dict, examples: int, run_seed: int | None) -> Outcome:
    """`examples` generated requests per operation and mode (valid, invalid),
    derandomized when `run_seed` is None. Runs in a thread: it blocks."""
    schema = schemathesis.openapi.from_dict(doc)
    outcome = Outcome()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        # It takes no input, and would sign the fuzzer out for every later request.
        if operation.path == "/api/token/revoke-all/":
            continue
        for mode in schemathesis.GenerationMode:

            @fuzz_settings(
                max_examples=examples,
                derandomize=run_seed is None,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: schemathesis.Case) -> None:
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=30
                )
                outcome.statuses[response.status_code] += 1
                wrong = problem_with(response)
                if wrong:
                    outcome.problems.append(
                        f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}: "
                        f"{wrong}: {response.status_code} {response.text[:200]}"
                    )

            if run_seed is not None:
                send = seed(run_seed)(send)
            # Nothing can be made invalid in a route without input (GET /healthz).
            with contextlib.suppress(Unsatisfiable):
                send()
    return outcome


async def run_fuzz(db_url, tmp_path, world: World, examples: int, run_seed: int | None) -> Outcome:
    async with (
        citelink_serve(db_url, tmp_path) as serve,
        httpx.AsyncClient(base_url=serve.server.http) as client,
    ):
        doc = (await client.get("/openapi.json")).json()
        outcome = await asyncio.to_thread(
            fuzz, serve.server.http, doc, world.staff.headers, examples, run_seed
        )
        # Still serving, and nothing went wrong inside.
        assert (await client.get("/readyz")).status_code == 200
    log = serve.output.decode()
    assert "Traceback" not in log, log[-3000:]
    return outcome


def report(outcome: Outcome) -> str:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(outcome.statuses.items()))
    return f"{outcome.requests} requests ({statuses}), {len(outcome.problems)} problems"


async def test_fuzz_every_route_slice(db_url, tmp_path, world: World, figure):
    outcome = await run_fuzz(db_url, tmp_path, world, examples=8, run_seed=None)
    figure(report(outcome))
    assert outcome.problems == []
    assert outcome.requests >= 300


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_fuzz_every_route_long_run(db_url, tmp_path, world: World, figure):
    run_seed = random.randrange(2**32)
    outcome = await run_fuzz(db_url, tmp_path, world, examples=250, run_seed=run_seed)
    figure(f"seed {run_seed}: {report(outcome)}")
    assert outcome.problems == []
    assert outcome.requests >= 10_000
