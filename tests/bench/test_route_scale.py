"""``cdcrouter bench route -n N`` above 20 filters (:mod:`cdcrouter.bench.route_scale`): the output
count reads only committed records, the commit log is grouped by partitions touched, and one small
end-to-end run accounts for every record against the unindexed matcher."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer

from cdcrouter.bench import route_scale
from cdcrouter.route.engine import RouterOptions

LOG = """\
12:00:00 DEBUG committed 2000 on t.0: filled 100.0 ms, queued 0.1 ms, commit 40.0 ms (offsets 2.0), \
delivered 300.0 ms, 950 filters
12:00:01 DEBUG committed 9000 on t.0.lane1: filled 900.0 ms, queued 0.1 ms, commit 60.0 ms (offsets 2.0), \
delivered 500.0 ms, 990 filters
12:00:02 DEBUG committed 50 on t.0: filled 5.0 ms, queued 0.1 ms, commit 8.0 ms (offsets 1.0), \
delivered 2.0 ms, 40 filters
"""


def test_commit_profile_groups_commits_by_partitions_touched() -> None:
    prof = route_scale.commit_profile(LOG)
    assert prof["transactions"] == 3
    assert prof["partitions_0-99"] == {
        "transactions": 1,
        "events_per_txn_p50": 50.0,
        "deliver_ms_p50_p99": [2.0, 2.0],
        "commit_ms_p50_p99": [8.0, 8.0],
    }
    big = prof["partitions_900+"]
    assert big["transactions"] == 2 and big["events_per_txn_p50"] == 5500.0
    assert big["deliver_ms_p50_p99"][0] == 400.0 and big["commit_ms_p50_p99"][1] == pytest.approx(59.8)


def test_a_transaction_under_a_backlog_fills_for_twice_its_predecessors_cost() -> None:
    opts = RouterOptions()
    assert opts.fill_ms(10.0) == opts.max_txn_ms  # cheap commits (few partitions): as before
    assert opts.fill_ms(400.0) == 800.0  # 1,000 partitions: deliver + commit ~400 ms
    assert opts.fill_ms(60_000.0) == opts.max_fill_ms  # bounded


@pytest.mark.integration
@pytest.mark.stack_services("kafka", "registry")
def test_count_outputs_counts_committed_records_only(stack: Any, unique_name: Any) -> None:
    from confluent_kafka.admin import NewTopic

    from cdcrouter.topics import admin_client, delete_topics

    conns = stack.connections
    topics = [unique_name("scale-count-a"), unique_name("scale-count-b")]
    admin = admin_client(conns.kafka.to_librdkafka())
    for fut in admin.create_topics([NewTopic(t, 1, 1) for t in topics]).values():
        fut.result()
    try:
        p = Producer(conns.kafka.producer_conf(**{"transactional.id": unique_name("scale-count-tx")}))
        p.init_transactions(30)
        for commit, n in ((True, 3), (False, 5), (True, 2)):
            p.begin_transaction()
            for i in range(n):
                p.produce(topics[i % 2], b"v", b"k")
            p.flush(30)
            (p.commit_transaction if commit else p.abort_transaction)(30)
        counts, stamps = route_scale.count_outputs(conns, topics, timeout_s=60)
        # committed: 3 (2 to a, 1 to b) + 2 (1 + 1); the 5 aborted ones and the markers are not records
        assert counts == {topics[0]: 3, topics[1]: 2} and len(stamps) == 5
    finally:
        delete_topics(conns, topics)


@pytest.mark.integration
@pytest.mark.stack_services("kafka", "registry")
def test_a_small_scale_run_accounts_for_every_record(stack: Any) -> None:
    out = route_scale.run_scale(stack.connections, filters=40, events=3000, warmup=1000)
    assert out["output_topics"] == 40 and out["filters"] == 40
    # every topic's count equalled the unindexed matcher's (run_scale raises otherwise)
    assert out["output_records"] == out["expected_records"] > 4000  # 1-3 filters per event, mostly
    assert out["events_per_s"] > 0 and out["events_per_cpu_s"] > 0 and out["peak_rss_mb"] > 0
    assert out["commits"]["transactions"] >= 1
