"""The benchmark's row cache: which cached rows count as current, and reruns compared."""

import pytest

from zscgan_tf import benchmark_rows


def test_rows_cached_under_other_settings_are_not_reported():
    rows = [("fp32", "FP32", None, {"seed": 0}), ("zscgan_ptq", "ZS-CGAN PTQ", None, {"seed": 0, "pool": 3}),
            ("latency", "LiteRT latency", None, {"seed": 0})]
    cache = {"fp32": {"key": benchmark_rows.row_key("fp32", {"seed": 0}), "result": {"top1": 0.9}},
             "zscgan_ptq": {"key": benchmark_rows.row_key("zscgan_ptq", {"seed": 0, "pool": 1}),
                            "result": {"top1": 0.8}}}
    assert benchmark_rows.current_rows(cache, rows) == {"fp32": {"top1": 0.9}}


def test_row_keys_name_the_row_and_ignore_the_order_of_settings():
    assert benchmark_rows.row_key("fp32", {"a": 1, "b": 2}) == benchmark_rows.row_key("fp32", {"b": 2, "a": 1})
    assert benchmark_rows.row_key("fp32", {"a": 1}) != benchmark_rows.row_key("real_ptq", {"a": 1})
    assert benchmark_rows.row_key("fp32", {"a": 1}) != benchmark_rows.row_key("fp32", {"a": 1.5})


def test_rows_computed_with_other_settings_are_not_compared():
    current = {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.9}},
               "noise_ptq": {"key": "b", "result": {"label": "noise PTQ", "top1": 0.8}},
               "latency": {"key": "c", "result": {"label": "LiteRT latency", "float_1_threads_ms": 1.0}}}
    earlier = {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.905}},
               "noise_ptq": {"key": "other", "result": {"label": "noise PTQ", "top1": 0.5}},
               "latency": {"key": "c", "result": {"label": "LiteRT latency", "float_1_threads_ms": 9.0}}}
    compared = benchmark_rows.compare_rows(current, earlier, "earlier")
    assert [row["id"] for row in compared["rows"]] == ["fp32"]
    assert compared["max_difference_points"] == pytest.approx(0.5) and not compared["met"]
    within = benchmark_rows.compare_rows(current, {"fp32": {"key": "a", "result": {"label": "FP32", "top1": 0.902}}},
                                         "close")
    assert within["met"] and within["max_difference_points"] == pytest.approx(0.2)
    against_nothing = benchmark_rows.compare_rows(current, {}, "none")
    assert not against_nothing["met"] and against_nothing["rows"] == []
