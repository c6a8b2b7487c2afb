"""`lumen serve --num-replicas N`: deploy the application on Ray and wait for a signal.

Without RAY_ADDRESS this starts a local Ray instance, which stops with the server; with it,
the server joins that cluster (`ray start --head` on one machine, `ray start --address ...` on
the others) and only its application is removed at the end. Ray's HTTP proxy listens on
--host / --port.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from configs.settings import Settings

logger = logging.getLogger("lumen")

APP_NAME = "lumen"


def serve_on_ray(settings: Settings, host: str, port: int) -> None:
    import ray
    from ray import serve

    from asgi.replicas.application import build_application

    joined = bool(os.environ.get("RAY_ADDRESS"))
    ray.init(namespace=APP_NAME, include_dashboard=False, log_to_driver=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which sets its own
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        low, high = settings.replica_range or (1, 1)
        logger.info(
            "deploying %s replica(s)%s on Ray (%s)",
            low if low == high else f"{low} to {high}",
            "" if low == high else " (autoscaled)",
            os.environ["RAY_ADDRESS"] if joined else "a local instance",
        )
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
        logger.info("ready: Ray Serve listening on %s:%d", host, port)
        stop.wait()
        logger.info("stopping")
        if joined:
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
    finally:
        ray.shutdown()
    logger.info("stopped")
