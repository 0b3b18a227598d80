"""evaluate.py's metrics against a confusion matrix worked out by hand, and its report formatting."""

import pytest

import evaluate


def test_metrics_match_a_hand_worked_confusion_matrix():
    # Digits 0, 1, 2 only. True/predicted pairs:
    #   0->0, 0->0, 0->1      (two of three zeros right)
    #   1->1, 1->1            (both ones right)
    #   2->2, 2->0, 2->2, 2->2 (three of four twos right)
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predictions = [0, 0, 1, 1, 1, 2, 0, 2, 2]
    m = evaluate.compute_metrics(labels, predictions)
    # Hand-worked: predicted 0 three times (two right), 1 three times (two right), 2 three times (all right).
    assert m["accuracy"] == pytest.approx(7 / 9)
    per = {c["digit"]: c for c in m["per_class"]}
    assert per[0]["precision"] == pytest.approx(2 / 3) and per[0]["recall"] == pytest.approx(2 / 3)
    assert per[1]["precision"] == pytest.approx(2 / 3) and per[1]["recall"] == pytest.approx(1.0)
    assert per[2]["precision"] == pytest.approx(1.0) and per[2]["recall"] == pytest.approx(3 / 4)
    assert per[2]["f1"] == pytest.approx(2 * 1.0 * 0.75 / 1.75)
    assert [per[d]["support"] for d in range(10)] == [3, 2, 4, 0, 0, 0, 0, 0, 0, 0]
    # Digits absent from both labels and predictions count as 0 in the macro average over all ten.
    assert m["precision_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 10)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 + 3 / 4) / 10)
    assert m["recall_weighted"] == pytest.approx((3 * 2 / 3 + 2 * 1 + 4 * 3 / 4) / 9)
    assert m["confusion_matrix"][0][:3] == [2, 1, 0]
    assert m["confusion_matrix"][1][:3] == [0, 2, 0]
    assert m["confusion_matrix"][2][:3] == [1, 0, 3]
    assert len(m["confusion_matrix"]) == 10 and all(len(row) == 10 for row in m["confusion_matrix"])


def test_report_lists_every_digit_and_the_matrix():
    m = evaluate.compute_metrics(list(range(10)) * 2, list(range(10)) * 2)
    text = evaluate.format_report(m)
    assert "accuracy            1.0000" in text
    assert text.count("\n") > 25
    assert "     9     0     0     0     0     0     0     0     0     0     2" in text
