"""benchmarks.common.measure_interleaved: the compared models each in their own process,
called in turn (A, B, A, B, ...), so that a busy neighbour slows every side alike."""

import multiprocessing

import pytest
from test_benchmark import TINY_MODEL

from benchmarks.common import build_jsis, measure_interleaved
from benchmarks.timing import time_calls


def build_that_fails(**kwargs):
    """A side whose model cannot be built (module level: the spawned process imports it)."""
    raise ValueError("this side cannot be built")


def _order(results):
    """Side names in the order their timed calls started (wall clock across processes)."""
    stamps = sorted((t, name) for name, r in results.items() for t in r["call_started"])
    return [name for _, name in stamps]


def test_sides_run_in_their_own_processes_in_turn():
    semantic = dict(TINY_MODEL, branches=("semantic",))
    r = measure_interleaved(
        {"joint": (build_jsis, TINY_MODEL), "semantic": (build_jsis, semantic)},
        mode="infer",
        size=(64, 64),
        warmup=1,
        repeats=3,
        threads=1,
        flops=("joint",),
    )
    assert _order(r) == ["joint", "semantic"] * 3
    for x in r.values():
        # measure()'s result, from the side's own process
        assert x["repeats"] == len(x["times_s"]) == 3 and x["median_s"] > 0
        assert x["min_s"] <= x["median_s"] and x["peak_rss_mb"] > 0 and x["threads"] == 1
        assert len(x["load_average"]) == 2
    assert r["joint"]["gflops"] > 0 and "gflops" not in r["semantic"]
    assert "proposals" in r["joint"] and "proposals" not in r["semantic"]
    assert r["semantic"]["params_m"] < r["joint"]["params_m"]
    assert multiprocessing.active_children() == []


def test_in_process_sides_keep_the_same_order():
    r = measure_interleaved(
        {"a": (build_jsis, TINY_MODEL), "b": (build_jsis, TINY_MODEL)},
        mode="train",
        size=(64, 64),
        warmup=0,
        repeats=2,
        threads=1,
        isolated=False,
    )
    assert _order(r) == ["a", "b", "a", "b"]
    assert r["a"]["loss_keys"] == r["b"]["loss_keys"] and "loss_sem_seg" in r["a"]["loss_keys"]


def test_a_failing_side_names_itself_and_stops_the_others():
    with pytest.raises(RuntimeError, match=r"(?s)side 'broken' failed:.*this side cannot be built"):
        measure_interleaved(
            {"ok": (build_jsis, TINY_MODEL), "broken": (build_that_fails, {})},
            size=(64, 64),
            repeats=1,
            threads=1,
        )
    assert multiprocessing.active_children() == []


def test_precision_variants_of_a_model_and_mode_are_timed_together(monkeypatch):
    """precision: one interleaved measurement per (model, mode), over all variants."""
    from benchmarks import precision

    calls = []

    def recording(sides, mode, **kw):
        calls.append((tuple(sides), mode))
        return measure_interleaved(sides, mode=mode, **dict(kw, isolated=False))

    monkeypatch.setattr(precision, "measure_interleaved", recording)
    rows = precision._timings({"tiny": TINY_MODEL}, ["fp32", "fp32_cl"], 2, 1, threads=1)
    assert calls == [(("fp32", "fp32_cl"), "infer"), (("fp32", "fp32_cl"), "train")]
    assert [(r["mode"], r["variant"]) for r in rows] == [
        ("infer", "fp32"),
        ("infer", "fp32_cl"),
        ("train", "fp32"),
        ("train", "fp32_cl"),
    ]
    assert [len(r["times_s"]) for r in rows] == [2, 2, 1, 1]


def test_topk_runs_every_image_with_each_value_in_turn(monkeypatch):
    from test_benchmark import _args

    from benchmarks import topk

    seen = []

    def recording(fns, repeats, warmup=0, **kw):
        (call,) = fns.values()  # functools.partial(model, inputs)
        seen.append(call.func.proposal_generator.post_nms_topk[False])
        return time_calls(fns, repeats, warmup, **kw)

    monkeypatch.setattr(topk, "time_calls", recording)
    r = topk.run(_args(topk, ["--quick", "--topk", "2", "8", "--images", "3", "--passes", "1"]))
    # after the warm-up image: image 0 runs 2 then 8, image 1 8 then 2, image 2 2 then 8
    assert seen == [2, 8, 8, 2, 2, 8]
    assert topk.interleaved_order([2, 8, 16], 1) == [16, 8, 2]
    assert r["interleaved"] and "every image runs each top-k in turn" in r["markdown"]
    for x in r["rows"]:
        lat = x["latency_passes_ms"]
        assert f"| {x['latency_ms']:.0f} ({min(lat):.0f}-{max(lat):.0f}) |" in r["markdown"]


def test_mapper_rows_show_the_range_of_their_passes_when_recorded():
    from benchmarks import mapper

    row = {
        "size": [8, 8],
        "images": 4,
        "segments_per_image": 2.0,
        "jsis_train_img_s": 50.0,
        "jsis_test_img_s": 100.0,
        "d2_image_only_img_s": 100.0,
        "train_vs_floor": 0.5,
        "test_vs_floor": 1.0,
    }
    r = {"rows": [row], "repeats": 2, "load_average": [0.5, 0.6], "threads": 1, "cpu_count": 2}
    assert "| 50.0 (0.50x) |" in mapper.markdown(r)  # results measured before: as they were
    row["passes_img_s"] = {
        "jsis_train_img_s": [40.0, 50.0],
        "jsis_test_img_s": [100.0, 90.0],
        "d2_image_only_img_s": [100.0, 95.5],
    }
    md = mapper.markdown(r)
    assert "| 50.0 (0.50x; passes 40.0-50.0) |" in md and "(1.00x; passes 95.5-100.0)" in md
