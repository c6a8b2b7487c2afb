"""Which engine replicas are alive and where their metrics are, for Prometheus.

Each replica serves its own Prometheus registry on a port of its node and announces itself to
the front every ANNOUNCE_PERIOD_S; the front answers `GET /metrics/replicas` with Prometheus'
HTTP service discovery format (one target per replica, labelled with its replica id), so a
scrape config with `http_sd_configs` finds every replica, including those Ray adds or replaces.
A replica not heard from for three periods (it died) is dropped.
"""

from __future__ import annotations

import time

import attrs
import orjson

ANNOUNCE_PERIOD_S = 5.0


@attrs.frozen
class ReplicaInfo:
    replica_id: str  # Ray Serve's unique id of the replica
    metrics_target: str  # host:port of its Prometheus endpoint
    pid: int


@attrs.define
class ReplicaDirectory:
    _seen: dict[str, tuple[ReplicaInfo, float]] = attrs.field(factory=dict)

    def announce(self, info: ReplicaInfo) -> None:
        self._seen[info.replica_id] = (info, time.monotonic())

    def alive(self) -> list[ReplicaInfo]:
        cutoff = time.monotonic() - 3 * ANNOUNCE_PERIOD_S
        self._seen = {key: seen for key, seen in self._seen.items() if seen[1] >= cutoff}
        return [info for info, _ in self._seen.values()]

    def service_discovery(self) -> bytes:
        """Prometheus' http_sd_configs body: a target group per replica. Labels that start
        with __meta_ are for relabelling only; Prometheus drops them from the series."""
        groups = [
            {
                "targets": [info.metrics_target],
                "labels": {"replica": info.replica_id, "__meta_lumen_pid": str(info.pid)},
            }
            for info in sorted(self.alive(), key=lambda info: info.replica_id)
        ]
        return orjson.dumps(groups)
