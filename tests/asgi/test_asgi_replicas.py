"""The pieces of the Ray Serve deployment that run without Ray: prefix keys, body reading, an
app served on a forwarded request, and the prefix router's choice (on stand-in replicas)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from asgi.replicas.forwarding import ForwardedRequest, portable_scope, read_body, run_forwarded
from asgi.replicas.prefixes import CHUNK_CHARS, prefix_keys

pytestmark = pytest.mark.anyio
SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 20}


def _chat(*messages: dict, model: str = "m") -> bytes:
    return orjson.dumps({"model": model, "messages": list(messages)})


def test_a_conversations_next_turn_extends_its_keys() -> None:
    first = prefix_keys(_chat(SYSTEM, {"role": "user", "content": "Hi"}))
    turn = [SYSTEM, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]
    second = prefix_keys(_chat(*turn, {"role": "user", "content": "More " * 60}))
    assert len(first) >= 4 and len(second) > len(first)
    assert second[: len(first)] == first


def test_keys_differ_by_model_and_prompt_and_need_a_whole_chunk() -> None:
    user = {"role": "user", "content": "x" * CHUNK_CHARS}
    assert prefix_keys(_chat(SYSTEM, user))[0] != prefix_keys(_chat(SYSTEM, user, model="n"))[0]
    other = {"role": "system", "content": "Different. " * 60}
    assert prefix_keys(_chat(SYSTEM, user))[0] != prefix_keys(_chat(other, user))[0]
    assert prefix_keys(_chat({"role": "user", "content": "Hi"})) == ()
    assert prefix_keys(b"not json") == prefix_keys(b"[1, 2]") == ()
    completion = orjson.dumps({"model": "m", "prompt": "y" * 3 * CHUNK_CHARS})
    assert len(prefix_keys(completion)) == 3


async def test_the_body_is_read_whole_or_cut_past_the_limit() -> None:
    def receiving(*messages: dict):
        queue = list(messages)

        async def receive() -> dict:
            return queue.pop(0)

        return receive

    parts = [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def", "more_body": False},
    ]
    assert await read_body(receiving(*parts), limit=10) == b"abcdef"
    assert await read_body(receiving(*parts), limit=2) == b"abc"  # limit + 1: the app says 413
    assert await read_body(receiving({"type": "http.disconnect"}), limit=10) is None


async def _echo(scope, receive, send) -> None:
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for piece in (scope["path"].encode(), body, scope["state"]["tag"]):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_an_app_serves_a_forwarded_request_message_by_message() -> None:
    scope = {"type": "http", "path": "/echo", "headers": [(b"a", b"1")], "app": object()}
    request = ForwardedRequest(portable_scope(scope), b"payload")
    assert "app" not in request.scope
    messages = [m async for m in run_forwarded(_echo, {"tag": b"!"}, request)]
    assert messages[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"/echopayload!"


async def test_closing_the_stream_early_cancels_the_app() -> None:
    cancelled = asyncio.Event()

    async def endless(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b".", "more_body": True})
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = run_forwarded(endless, {}, ForwardedRequest({"type": "http", "path": "/"}, b""))
    await anext(stream)
    await anext(stream)
    await stream.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)


def test_the_prefix_router_prefers_the_replica_that_served_the_prefix() -> None:
    pytest.importorskip("ray.serve")
    from asgi.replicas.prefix_router import IMBALANCE, PrefixRouter

    router = PrefixRouter.__new__(PrefixRouter)
    router.initialize_state()
    queues = {"a": 0, "b": 0}
    router._replica_queue_len_cache = SimpleNamespace(get=lambda replica_id: queues[replica_id])
    a, b = SimpleNamespace(replica_id="a"), SimpleNamespace(replica_id="b")

    def pending(body: bytes) -> SimpleNamespace:
        return SimpleNamespace(args=[ForwardedRequest({}, body, prefix_keys(body))])

    def choose(candidates: list, request: SimpleNamespace) -> list[list]:
        ranks = asyncio.run(router.choose_replicas(candidates, request))
        return [sorted(rank, key=lambda replica: replica.replica_id) for rank in ranks]

    first = pending(_chat(SYSTEM, {"role": "user", "content": "Hi"}))
    assert choose([a, b], first) == [[a, b]]  # unknown: the least loaded
    router.on_request_routed(first, "b", None)
    later = pending(_chat(SYSTEM, {"role": "user", "content": "Bye " * 50}))
    assert choose([a, b], later) == [[b], [a]]
    queues["b"] = IMBALANCE + 1  # too busy next to a: the least loaded again
    assert choose([a, b], later) == [[a, b]]
    queues["b"] = 0
    assert choose([a], later) == [[a]]  # b is gone
    short = pending(_chat({"role": "user", "content": "Hi"}))  # no whole chunk: no keys
    orders = {
        tuple(r.replica_id for r in asyncio.run(router.choose_replicas([a, b], short))[0])
        for _ in range(64)
    }
    assert len(orders) == 2  # equals come in both orders: ties spread


def test_the_example_ray_serve_config_builds_the_application() -> None:
    pytest.importorskip("ray.serve")
    import yaml

    from asgi.replicas.application import app_builder

    config = yaml.safe_load((Path(__file__).parents[2] / "configs" / "ray_serve.yaml").read_text())
    (application,) = config["applications"]
    module, name = application["import_path"].split(":")
    assert (module, name) == ("asgi.replicas.application", "app_builder")
    front = app_builder(application["args"])._bound_deployment
    engine = front.init_args[0]._bound_deployment
    assert (front.name, engine.name) == ("front", "engine")
    assert engine.num_replicas == 2 and engine.ray_actor_options["num_cpus"] == 1


def test_the_directory_lists_live_replicas_for_prometheus(monkeypatch) -> None:
    from asgi.replicas import directory

    now = [1000.0]
    monkeypatch.setattr(directory.time, "monotonic", lambda: now[0])
    replicas = directory.ReplicaDirectory()
    replicas.announce(directory.ReplicaInfo("r1", "10.0.0.1:9001", 11))
    now[0] += 2 * directory.ANNOUNCE_PERIOD_S
    replicas.announce(directory.ReplicaInfo("r2", "10.0.0.2:9002", 22))
    assert orjson.loads(replicas.service_discovery()) == [
        {"targets": ["10.0.0.1:9001"], "labels": {"replica": "r1", "__meta_lumen_pid": "11"}},
        {"targets": ["10.0.0.2:9002"], "labels": {"replica": "r2", "__meta_lumen_pid": "22"}},
    ]
    now[0] += 2 * directory.ANNOUNCE_PERIOD_S  # r1 unheard for 4 periods: gone
    assert [info.replica_id for info in replicas.alive()] == ["r2"]


def test_replica_limits_come_from_the_admission_settings() -> None:
    pytest.importorskip("ray.serve")
    from asgi.replicas.application import app_builder

    args = {"max_num_seqs": 8, "max_queued_sequences": 16, "autoscale": "1:3", "models": []}
    front = app_builder(args)._bound_deployment
    engine = front.init_args[0]._bound_deployment
    config = engine._deployment_config
    assert (config.max_ongoing_requests, config.max_queued_requests) == (24, 16)
    autoscaling = config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 3)
    assert config.request_router_config.request_router_class.endswith("PrefixRouter")
