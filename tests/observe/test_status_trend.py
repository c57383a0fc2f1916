"""``--watch``'s trend rule on its own: lags of consecutive refreshes, as the view reports them."""

from __future__ import annotations

from typing import Any

from cdcrouter.observe.trend import LagTrend


def view(router_lag: int, consumer_lag: int, problems: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "healthy": not problems,
        "problems": list(problems or []),
        "raw_topic": {"name": "raw", "router_group": {"group": "router", "lag": router_lag}},
        "filtered_topics": [{"name": "cars", "groups": [{"group": "fleet", "lag": consumer_lag}]}],
    }


def test_a_lag_that_rises_at_every_refresh_is_marked_once_it_rose_three_times() -> None:
    trend = LagTrend()
    marks = []
    for router_lag in (10, 20, 30, 40, 50):
        doc = trend.apply(view(router_lag, 0))
        marks.append([p["code"] for p in doc["problems"]])
    assert marks == [[], [], [], ["router_falling_behind"], ["router_falling_behind"]]
    assert doc["healthy"] is False and doc["problems"][0]["where"] == "router on raw"


def test_a_burst_that_drains_is_not_marked() -> None:
    trend = LagTrend()
    codes = [
        [p["code"] for p in trend.apply(view(0, lag))["problems"]]
        for lag in (5, 50, 500, 20, 400, 800, 0)  # rises, falls, rises twice, drains
    ]
    assert codes == [[]] * 7


def test_a_group_already_marked_by_the_view_is_not_marked_twice() -> None:
    trend = LagTrend()
    growing = [{"code": "consumer_lag_growing", "where": "fleet on cars", "message": "", "hint": ""}]
    for lag in (1, 2, 3, 4):
        doc = trend.apply(view(0, lag, growing))
    assert [p["code"] for p in doc["problems"]] == ["consumer_lag_growing"]
