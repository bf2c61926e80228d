"""Feedback: true labels joined to the predictions that were served (and shadowed), feeding
live accuracy per version; ids that do not join are reported, never dropped silently."""

from __future__ import annotations

import gc

import msgspec
import pytest

from gateway.guard.feedback import FeedbackItem, PredictionLog
from gateway.guard.live import GuardStats

T0 = 1_000.0


def log_with_stats(
    *, max_entries: int = 100, ttl_s: float = 3_600.0
) -> tuple[PredictionLog, GuardStats]:
    stats = GuardStats()
    stats.sync_release(
        "digits", 1, baseline=("baseline", "1"), candidate=("candidate", "2"), now=T0
    )
    return PredictionLog(max_entries=max_entries, ttl_s=ttl_s, sink=stats), stats


def items(*pairs: tuple[str, int | str | list[int | str]]) -> list[FeedbackItem]:
    return [FeedbackItem(id=request_id, label=label) for request_id, label in pairs]


def test_feedback_joins_the_served_and_shadow_predictions() -> None:
    """A label joins the served prediction and the shadows' predictions of the same request;
    each version's live accuracy moves, the served one in its arm of the release window."""
    log, stats = log_with_stats()
    log.record("digits", "r1", "2", [7], now=T0, variant="candidate")
    log.record_shadow("digits", "r1", "3", [1])
    log.record("digits", "r2", "1", ["4"], now=T0 + 1, variant="baseline")
    result = log.join("digits", items(("r1", 7), ("r2", "5")), now=T0 + 10)
    assert result.accepted == 2
    assert {name: (v.correct, v.total) for name, v in result.versions.items()} == {
        "2": (1, 1),
        "3:shadow": (0, 1),
        "1": (0, 1),
    }
    window = stats.window("digits")
    assert window is not None
    assert window.candidate.accuracy.accuracy == 1.0
    assert window.baseline.accuracy.accuracy == 0.0
    assert stats.shadowed("digits")["3"].accuracy.total == 1
    assert (result.unknown, result.expired, result.duplicate, result.invalid) == ([], [], [], [])


def test_unknown_ids_and_ids_of_another_model_are_reported() -> None:
    """An id never recorded, or recorded for another model, comes back as unknown."""
    log, _ = log_with_stats()
    log.record("digits", "r1", "2", [7], now=T0, variant="candidate")
    result = log.join("digits", items(("nope", 1)), now=T0)
    assert result.unknown == ["nope"]
    assert log.join("mnist", items(("r1", 7)), now=T0).unknown == ["r1"]
    assert result.accepted == 0


def test_predictions_past_their_time_to_live_are_reported_expired() -> None:
    """Feedback after the time to live is reported as expired, not joined, whether the
    prediction was still held or already evicted by age."""
    log, stats = log_with_stats(ttl_s=60.0)
    log.record("digits", "old", "2", [7], now=T0, variant="candidate")
    log.record("digits", "older", "2", [7], now=T0 - 30, variant="candidate")
    result = log.join("digits", items(("old", 7), ("older", 7)), now=T0 + 61)
    assert sorted(result.expired) == ["old", "older"]
    assert result.accepted == 0
    assert stats.served("digits") == {}


def test_the_log_is_bounded_and_remembers_what_it_evicted() -> None:
    """Beyond its capacity the log drops the oldest predictions; feedback for them is
    reported as expired, and the newest still join."""
    log, _ = log_with_stats(max_entries=3)
    for index in range(5):
        log.record("digits", f"r{index}", "2", [index], now=T0 + index, variant="candidate")
    assert len(log) == 3
    result = log.join("digits", items(("r0", 0), ("r4", 4)), now=T0 + 5)
    assert result.expired == ["r0"]
    assert result.accepted == 1


def test_a_full_log_evicts_a_slice_at_once_and_remembers_each_evicted_id() -> None:
    """A log past its capacity drops the oldest 1 % at once (so it never holds more than its
    capacity, and evicts once a slice rather than once a record); every id it dropped is
    still reported as expired, and the ones it kept still join."""
    log, _ = log_with_stats(max_entries=200)
    for index in range(201):
        log.record("digits", f"r{index}", "2", [index % 10], now=T0 + index)
    assert len(log) == 198
    for index in range(201, 203):
        log.record("digits", f"r{index}", "2", [index % 10], now=T0 + index)
    assert len(log) == 200  # below capacity again: nothing more was dropped
    result = log.join("digits", items(("r0", 0), ("r2", 2), ("r3", 3), ("r202", 2)), now=T0)
    assert sorted(result.expired) == ["r0", "r2"]
    assert result.accepted == 2


def test_a_second_label_for_the_same_prediction_is_a_duplicate() -> None:
    """Each prediction takes feedback once; a repeat is reported and not counted twice."""
    log, stats = log_with_stats()
    log.record("digits", "r1", "2", [7], now=T0, variant="candidate")
    log.join("digits", items(("r1", 7)), now=T0)
    again = log.join("digits", items(("r1", 7)), now=T0)
    assert again.duplicate == ["r1"]
    assert stats.served("digits")["2"].accuracy.total == 1


def test_a_batch_prediction_takes_one_label_per_row() -> None:
    """A request of several rows takes a list of labels, one per row, each counting toward
    accuracy; a list of the wrong length is reported invalid and joins nothing."""
    log, stats = log_with_stats()
    log.record("digits", "batch", "2", [1, 2, 3], now=T0, variant="candidate")
    log.record("digits", "other", "2", [1, 2], now=T0, variant="candidate")
    result = log.join("digits", items(("batch", [1, 2, 9]), ("other", 1)), now=T0)
    assert result.versions["2"].correct == 2
    assert result.versions["2"].total == 3
    assert [(i.id, i.reason) for i in result.invalid] == [
        ("other", "1 label(s) for a prediction of 2 row(s)")
    ]
    assert stats.served("digits")["2"].accuracy.accuracy == pytest.approx(2 / 3)


def test_feedback_items_decode_from_the_endpoint_body() -> None:
    """The endpoint's body is one item or a list of items, labels as numbers, strings or a
    list; unknown fields are refused."""
    one = msgspec.json.decode(b'{"id": "r1", "label": 3}', type=FeedbackItem)
    many = msgspec.json.decode(
        b'[{"id": "r1", "label": "3"}, {"id": "r2", "label": [1, 2]}]', type=list[FeedbackItem]
    )
    assert one == FeedbackItem("r1", 3)
    assert many[1].label == [1, 2]
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"id": "r1", "label": 3, "x": 1}', type=FeedbackItem)


def test_logged_predictions_leave_the_garbage_collector_nothing_to_scan() -> None:
    """Once collected, the log's entries (tens of thousands, held for up to a day) add no
    objects for the garbage collector to scan: they cannot form cycles, and scanning them
    made every older-generation collection hold the event loop for tens of milliseconds."""
    log, _ = log_with_stats(max_entries=20_000, ttl_s=1e6)
    gc.collect()
    before = len(gc.get_objects())
    for index in range(10_000):
        log.record("digits", f"r{index}", "1", [index % 10], now=T0 + index, variant="baseline")
    log.record_shadow("digits", "r1", "3", [1])
    gc.collect()

    assert len(log) == 10_000
    assert len(gc.get_objects()) - before < 1_000  # a tracked entry each would be 10,000
