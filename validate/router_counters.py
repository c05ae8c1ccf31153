"""What the driver's own Ray router does, counted by wrapping its methods in this process.

A module of its own, apart from ``harness``: the harness is pickled by value for the
replicas (they cannot import ``validate``), and cloudpickle restores a by-value class's
attributes whenever this process unpickles it again, which Serve does about 0.1 s and
1 s after each deployment. Counters kept as class attributes there went back to their
values at the deployment (``python -m validate.gil_timeline`` found it, 2026-11-27): every
run's attempts, probes and rejections per request lost about its first second, 5% of a
15 s run (attempts per request 0.93-0.96 where each request takes at least one).
"""

from __future__ import annotations

import collections
import time


class RouterCounters:
    """Counts what the driver's own Ray router does: routing attempts (candidate sets
    tried, ``_select_from_candidate_replicas``), queue-length probes sent and probes
    that missed their deadline or failed (``_probe_queue_lens`` answers of ``None``),
    rejected sends (each is retried: ``_choose_replica_for_request(is_retry=True)``);
    and keeps the ``perf_counter`` times of its last done callbacks
    (``decrement_queue_len_cache``, run when a request's replica task ends) and of its
    last cache updates from a replica's answer (``on_new_queue_len_info``: acceptances,
    rejections and probe answers).

    A diagnosis of the handle path only: the router of an HTTP request lives in the
    proxy actor, which this process cannot instrument. Installed once, by wrapping the
    2.60 ``RequestRouter`` methods in this process before any handle routes."""

    attempts = probes = probe_failures = retries = 0
    done_times: collections.deque = collections.deque(maxlen=100_000)
    answer_times: collections.deque = collections.deque(maxlen=100_000)
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        from ray.serve._private.request_router.request_router import RequestRouter

        select, probe = RequestRouter._select_from_candidate_replicas, RequestRouter._probe_queue_lens
        choose = RequestRouter._choose_replica_for_request

        async def counted_select(self, candidates, backoff_index):
            cls.attempts += 1
            return await select(self, candidates, backoff_index)

        async def counted_probe(self, replicas, backoff_index):
            result = await probe(self, replicas, backoff_index)
            cls.probes += len(replicas)
            cls.probe_failures += sum(1 for _, q in result if q is None)
            return result

        async def counted_choose(self, pending_request, *, is_retry=False):
            cls.retries += is_retry
            return await choose(self, pending_request, is_retry=is_retry)

        decrement = RequestRouter.decrement_queue_len_cache

        def timed_decrement(self, replica_id):
            cls.done_times.append(time.perf_counter())
            return decrement(self, replica_id)

        answer = RequestRouter.on_new_queue_len_info

        def timed_answer(self, replica_id, num_ongoing_requests):
            cls.answer_times.append(time.perf_counter())
            return answer(self, replica_id, num_ongoing_requests)

        RequestRouter._select_from_candidate_replicas = counted_select
        RequestRouter._probe_queue_lens = counted_probe
        RequestRouter._choose_replica_for_request = counted_choose
        RequestRouter.decrement_queue_len_cache = timed_decrement
        RequestRouter.on_new_queue_len_info = timed_answer
        cls._installed = True

    @classmethod
    def snapshot(cls) -> tuple[int, int, int, int]:
        return cls.attempts, cls.probes, cls.probe_failures, cls.retries
