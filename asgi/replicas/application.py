"""The Ray Serve application: the front and the engine deployment, sized from the settings.

`lumen serve --num-replicas N` deploys it (launch.py); `serve run` and `serve deploy` take the
builder, e.g. `serve run asgi.replicas.application:app_builder num_replicas=2`, or a Ray Serve
config file naming it (configs/ray_serve.yaml). The builder's arguments are settings (as in a
lumen config file), beaten by the environment's LUMEN_* as everywhere.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from asgi.replicas.engine_replica import EngineReplica
from asgi.replicas.front import FRONT, Front
from asgi.replicas.prefix_router import PrefixRouter
from configs.settings import Settings, load_settings

# How often Ray asks each replica's engine whether it is healthy, and how long it may take.
HEALTH_CHECK_PERIOD_S = 10.0
HEALTH_CHECK_TIMEOUT_S = 30.0


def _gpus_per_replica(settings: Settings) -> float:
    if settings.ray_gpus_per_replica is not None:
        return settings.ray_gpus_per_replica
    has_gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    return 1.0 if has_gpus else 0.0


def build_application(settings: Settings) -> Application:
    low, high = settings.replica_range or (1, 1)
    engine_options: dict[str, Any] = {
        "name": "engine",
        "ray_actor_options": {
            "num_cpus": settings.ray_cpus_per_replica,
            "num_gpus": _gpus_per_replica(settings),
        },
        # A replica takes what its engine admits (running batch + queue); past that its own
        # admission answers 429, and past the handle's queue the front answers 503.
        "max_ongoing_requests": settings.max_num_seqs + settings.max_queued_sequences,
        "max_queued_requests": max(settings.max_queued_sequences, 1),
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
        "graceful_shutdown_timeout_s": settings.shutdown_timeout_s,
    }
    if settings.autoscale is not None:
        engine_options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": settings.max_num_seqs,
        }
    else:
        engine_options["num_replicas"] = low
    if settings.ray_request_router == "prefix":
        engine_options["request_router_config"] = RequestRouterConfig(
            request_router_class=PrefixRouter
        )
    engine = serve.deployment(EngineReplica).options(**engine_options)
    front = serve.deployment(Front).options(
        name=FRONT,
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=100_000,  # it only relays; the engine's limits apply
    )
    return front.bind(engine.bind(settings), settings)


def app_builder(args: dict[str, Any]) -> Application:
    """For `serve run` / `serve deploy`: settings from the arguments and the environment."""
    overrides = {name.replace("-", "_"): value for name, value in args.items()}
    return build_application(load_settings(dict(os.environ), cli_overrides=overrides))
