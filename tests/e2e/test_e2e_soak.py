"""The soak benchmark's short version against the real server: 150 concurrent streams, a third
abandoned at random points (after some chunks, or while still queued); afterwards nothing is
running, waiting or held, no task leaked, and a new request answers."""

from __future__ import annotations

import asyncio

from benchmarks.soak import soak


def test_soak_leaves_the_server_idle_and_serving(server):
    report = asyncio.run(soak(server.url, streams=150, max_tokens=12, seed=1))
    assert report.failed == [] and report.problems == [], (report.failed, report.problems)
    assert report.completed + report.cancelled == 150 and report.refused == 0
    assert report.cancelled >= 30  # the random third really was abandoned
