"""Tests of the benchmarks/ package: its shared timer and table writer, every benchmark's
markdown against the committed results, and smoke runs at tiny sizes (JSON structure and the
numbers derived from the measured ones, no timing thresholds)."""

import argparse
import functools
import importlib.util
import json
import math
import os

import pytest
import torch

from benchmarks import (
    common,
    hw,
    joint,
    mapper,
    merge,
    panoptic_fpn,
    precision,
    profile,
    roi_align,
    topk,
)
from benchmarks import pq as bench_pq
from benchmarks import readme as readme_mod
from benchmarks.common import measure_interleaved
from benchmarks.report import markdown_table
from benchmarks.timing import time_calls

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(mod, argv):
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output", default="unused")
    p.add_argument("--threads", type=int, default=1)
    mod.add_arguments(p)
    return p.parse_args(argv)


def _in_process(monkeypatch, mod):
    """Run the per-process measurements in this process (the spawn path is tested apart, in
    test_run_isolated_measures_in_a_child_process and test_benchmark_interleave.py)."""
    if hasattr(mod, "run_isolated"):
        monkeypatch.setattr(mod, "run_isolated", lambda fn, *a, **kw: fn(*a, **kw))
    if hasattr(mod, "measure_interleaved"):
        monkeypatch.setattr(
            mod, "measure_interleaved", functools.partial(measure_interleaved, isolated=False)
        )


def _finite(x):
    return isinstance(x, float) and math.isfinite(x)


#: ``build_jsis`` arguments of a tiny R18 model (64x64, K=5 / T=2) shared by the tests below.
TINY_MODEL = dict(
    depth=18,
    size=(64, 64),
    post_nms_test=4,
    detections=2,
    num_classes=5,
    num_things=2,
    extra=["MODEL.RESNETS.WIDTH_PER_GROUP", 8],
)


def test_run_isolated_measures_in_a_child_process():
    r = common.run_isolated(
        common.measure,
        common.build_jsis,
        TINY_MODEL,
        mode="infer",
        size=(64, 64),
        warmup=0,
        repeats=1,
        threads=1,
    )
    assert r["threads"] == 1 and r["mode"] == "infer"
    assert r["proposals"] <= 4 and r["detections"] <= 2
    assert r["peak_rss_mb"] >= r["rss_after_build_mb"] * 0.5 > 0
    assert r["peak_above_imports_mb"] == pytest.approx(r["peak_rss_mb"] - r["rss_before_build_mb"])
    assert json.dumps(r)


def test_count_flops_splits_by_module():
    model, cfg = common.build_jsis(**TINY_MODEL)
    model.eval()
    inputs = common.random_inputs(64, 64, num_classes=5, num_things=2)
    with torch.no_grad():
        fl = common.count_flops(model, inputs, common.FLOP_MODULES)
    by = fl["by_module"]
    assert {"backbone", "proposal_generator", "roi_heads", "sem_seg_head"} <= set(by)
    parts = by["backbone"] + by["proposal_generator"] + by["roi_heads"] + by["sem_seg_head"]
    assert parts == pytest.approx(fl["total"], rel=1e-6)
    # the backbone's first conv alone: 7x7x3 -> 64 at stride 2 on 64x64
    assert by["backbone"] > 7 * 7 * 3 * 64 * 32 * 32


def test_random_inputs_training_targets():
    (d,) = common.random_inputs(48, 64, train=True, num_classes=7, num_things=3, gt_per_image=4)
    assert d["image"].dtype == torch.uint8 and d["image"].shape == (3, 48, 64)
    assert d["sem_seg"].shape == (48, 64) and 0 <= d["sem_seg"].min() <= d["sem_seg"].max() < 7
    inst = d["instances"]
    assert len(inst) == 4 and inst.gt_classes.max() < 3
    assert inst.gt_masks.tensor.shape == (4, 48, 64)
    b = inst.gt_boxes.tensor
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 2] <= 64).all() and (b[:, 3] <= 48).all()


def test_joint_quick_structure(monkeypatch):
    _in_process(monkeypatch, joint)
    r = joint.run(
        _args(
            joint,
            [
                "--quick",
                "--sizes",
                "64",
                "64",
                "--proposals",
                "4",
                "--detections",
                "2",
                "--roi-batch",
                "8",
                "--warmup",
                "0",
            ],
        )
    )
    (row,) = r["rows"]
    assert row["size"] == [64, 64]
    for net in ("joint", "instance", "semantic"):
        for mode in ("infer", "train"):
            m = row[net][mode]
            assert _finite(m["median_s"]) and m["peak_rss_mb"] > 0 and m["threads"] == 1
    assert row["joint"]["train"]["loss_keys"] == sorted(
        ["loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "loss_sem_seg"]
    )
    assert row["semantic"]["train"]["loss_keys"] == ["loss_sem_seg"]
    assert "proposals" not in row["semantic"]["infer"]
    # instance-only and joint run the same ROI head; semantic-only has none
    assert row["joint"]["infer"]["gflops_by_module"]["roi_heads"] > 0
    j, i, s = (row[n]["infer"]["median_s"] for n in ("joint", "instance", "semantic"))
    assert row["ratios"]["infer"]["time"] == pytest.approx(j / (i + s))
    assert set(row["ratios"]["train"]) == {"time", "peak_rss", "peak_above_imports"}
    assert "joint / (inst + sem)" in r["markdown"] and "res5" in r["markdown"]
    # the three networks were called in turn, and each time cell shows the calls' range
    assert r["interleaved"] and "called in turn (A, B, A, B, ...)" in r["markdown"]
    t = row["joint"]["infer"]["times_s"]
    assert f"| {j:.2f} ({min(t):.2f}-{max(t):.2f}) |" in r["markdown"]
    rt = row["ratios"]["infer"]["time"]
    verdict = f"inference time {rt:.3f} " + ("met" if rt <= 0.85 else "**missed**")
    assert verdict in r["markdown"]
    assert json.dumps(r)


def test_panoptic_fpn_quick_structure(monkeypatch):
    _in_process(monkeypatch, panoptic_fpn)
    r = panoptic_fpn.run(
        _args(
            panoptic_fpn,
            [
                "--quick",
                "--sizes",
                "64",
                "64",
                "--proposals",
                "4",
                "--fpn-proposals",
                "8",
                "--detections",
                "2",
                "--warmup",
                "0",
            ],
        )
    )
    names = [x["network"] for x in r["rows"]]
    assert len(names) == 3 and names[0].startswith("JSIS-Net")
    assert all(n.startswith("PanopticFPN") for n in names[1:])
    assert r["rows"][0]["time_vs_jsis"] == 1.0
    fpn = r["rows"][1]
    assert fpn["gflops"] > 0 and {"backbone", "roi_heads", "sem_seg_head"} <= set(
        fpn["gflops_by_module"]
    )
    assert fpn["detections"] <= 2
    # more test proposals: more box-head work
    assert fpn["gflops_by_module"]["roi_heads"] > r["rows"][2]["gflops_by_module"]["roi_heads"]
    assert "PanopticFPN" in r["markdown"]
    # the three networks were called in turn; each latency cell shows the calls' range
    assert r["interleaved"] and "called in turn (A, B, A, B, ...)" in r["markdown"]
    t = fpn["times_s"]
    assert f"| {fpn['median_s']:.2f} ({min(t):.2f}-{max(t):.2f}) |" in r["markdown"]
    assert json.dumps(r)


def test_panoptic_fpn_config_is_detectron2s_architecture():
    cfg = panoptic_fpn.panoptic_fpn_cfg(depth=50, post_nms_test=1000)
    assert cfg.MODEL.META_ARCHITECTURE == "PanopticFPN"
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"
    assert cfg.MODEL.ROI_HEADS.NAME == "StandardROIHeads"
    assert cfg.MODEL.SEM_SEG_HEAD.NAME == "SemSegFPNHead"
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 54


def test_pareto_front_and_knee():
    # (latency, PQ): 3 is dominated by 2 (slower, lower PQ)
    pts = [(10.0, 20.0), (20.0, 30.0), (30.0, 31.0), (35.0, 29.0), (60.0, 31.5)]
    assert topk.pareto_front(pts) == [0, 1, 2, 4]
    assert topk.knee_point(pts) == 1
    # two points: the best PQ
    assert topk.knee_point([(1.0, 5.0), (2.0, 6.0)]) == 1
    # all equal PQ: the fastest is the only Pareto point
    assert topk.pareto_front([(3.0, 1.0), (1.0, 1.0), (2.0, 1.0)]) == [1]


def test_topk_missing_checkpoint_names_path_and_command(tmp_path):
    missing = str(tmp_path / "nope" / "model_final.pth")
    with pytest.raises(FileNotFoundError) as e:
        topk.run(_args(topk, ["--weights", missing]))
    assert missing in str(e.value) and "make demo" in str(e.value)


def test_topk_quick_structure():
    r = topk.run(_args(topk, ["--quick", "--topk", "2", "8", "--images", "2"]))
    assert [x["topk"] for x in r["rows"]] == [2, 8]
    assert r["quick"] and r["weights"] is None and r["images"] == 2
    for x in r["rows"]:
        assert _finite(x["latency_ms"]) and x["PQ"] is not None
        assert 0 <= x["rpn_recall"] <= 100
    assert r["knee_topk"] in (2, 8) and any(x["pareto"] for x in r["rows"])
    assert "meaningless" in r["markdown"]


def test_hw_through_the_cli(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_cli", os.path.join(REPO, "tools", "benchmark.py")
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "bench"
    assert (
        cli.main(
            [
                "hw",
                "--quick",
                "--output",
                str(out),
                "--threads",
                "1",
                "--size",
                "64",
                "64",
                "--conv",
                "32",
                "32",
                "32",
                "--repeats",
                "1",
            ]
        )
        == 0
    )
    r = json.loads((out / "hw.json").read_text())
    assert r["threads"] == 1 and r["dense_conv"]["gmacs"] == pytest.approx(
        hw.dense_conv_gmacs(32, 32, 32)
    )
    rates = {k: v["gmacs_per_s"] for k, v in r["dense_conv_variants"].items()}
    assert r["peak"]["gmacs_per_s"] == max(rates.values())  # the better of fp32 and bf16
    assert {"fp32", "fp32_cl"} <= set(rates)
    assert ({"bf16", "bf16_cl"} <= set(rates)) == r["cpu_bf16"]["supported"]
    assert r["ratio"] == pytest.approx(r["network"]["gmacs_per_s"] / r["peak"]["gmacs_per_s"])
    assert r["ratio_fp32_conv"] == pytest.approx(
        r["network"]["gmacs_per_s"] / r["dense_conv"]["gmacs_per_s"]
    )
    assert r["network"]["gmacs"] == pytest.approx(r["backbone"]["gmacs"] + r["heads"]["gmacs"])
    assert (out / "hw.md").read_text().startswith("Hardware efficiency")

    # the page's block is refilled from that JSON, the prose around it kept
    readme = tmp_path / "BENCHMARKS.md"
    readme.write_text("intro\n<!-- benchmark:hw -->\nold table\n<!-- /benchmark:hw -->\nafter\n")
    assert cli.main(["readme", "--results", str(out), "--page", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert r["markdown"].strip() in text and "hw.json" in text
    # a block the page lacks, or a result that was never produced: an error naming it
    assert cli.main(["readme", "--results", str(out), "--readme", str(readme), "joint"]) == 1
    readme.write_text(text + "<!-- benchmark:pq -->\n<!-- /benchmark:pq -->\n")
    with pytest.raises(readme_mod.ReadmeError, match=r"pq\.json.*benchmark.py pq"):
        readme_mod.update_readme(str(readme), str(out), ["pq"])


def test_benchmark_page_blocks_are_the_committed_results():
    """Every benchmark table in docs/BENCHMARKS.md is exactly what its committed JSON renders."""
    results = os.path.join(REPO, "docs", "benchmarks")
    with open(os.path.join(REPO, "docs", "BENCHMARKS.md")) as f:
        blocks = readme_mod.find_blocks(f.read())
    assert {
        "joint",
        "panoptic_fpn",
        "merge",
        "pq",
        "mapper",
        "hw",
        "topk",
        "precision",
        "profile",
        "roi_align",
    } <= set(blocks)
    for name, body in blocks.items():
        path = os.path.join(results, f"{name}.json")
        with open(path) as f:
            expected = readme_mod.render_block(json.load(f), os.path.relpath(path, REPO))
        assert body == expected, f"BENCHMARKS.md block {name} is stale: make benchmark-readme"


def test_pq_benchmark_small_run_agrees_with_panopticapi():
    r = bench_pq.run(
        _args(
            bench_pq, ["--images", "3", "--size", "24", "32", "--segments", "6", "--repeats", "1"]
        )
    )
    assert r["equal_to_panopticapi"] is True and r["max_abs_diff"] == 0
    assert r["ours_over_decode_floor"] == pytest.approx(
        r["best_s"]["ours"] / r["best_s"]["floor_decode"]
    )
    floor_ok = r["ours_over_decode_floor"] <= bench_pq.GOALS["ours_over_decode_floor"]
    assert ("floor: " + ("met" if floor_ok else "**missed**")) in r["markdown"]
    # every side timed in the same interleaved rounds, median with the range reported
    assert r["interleaved"] and "median (range) (s)" in r["markdown"]
    assert all(len(t) == 1 for t in r["times_s"].values()) and len(r["load_average"]) == 2


def test_readme_markers_errors():
    with pytest.raises(readme_mod.ReadmeError, match="closing marker.*'hw'"):
        readme_mod.find_blocks("<!-- benchmark:hw -->\nx\n")
    with pytest.raises(readme_mod.ReadmeError, match="no 'markdown'"):
        readme_mod.render_block({"rows": []}, "x.json")


def test_merge_panopticapi_side_agrees_with_inputs():
    pytest.importorskip("panopticapi.combine_semantic_and_instance_predictions")
    r = merge.run(
        _args(
            merge,
            [
                "--instances",
                "3",
                "--size",
                "48",
                "48",
                "--classes",
                "6",
                "--things",
                "3",
                "--repeats",
                "1",
            ],
        )
    )
    (row,) = r["rows"]
    assert row["instances"] == 3
    assert _finite(row["panopticapi_combine_ms"]) and row["segments_panopticapi"] >= 1
    assert "panopticapi" in r["markdown"]


def test_panopticapi_inputs_encode_the_prediction():
    from pycocotools import mask as mask_util

    sem_seg, inst = merge.make_prediction(4, 32, 40, 6, 3, seed=1)
    is_thing = torch.arange(6) < 3
    img, instances, semantic, cats = merge.panopticapi_inputs(sem_seg, inst, is_thing, 0.5, 0.5)
    assert img["height"] == 32 and img["width"] == 40
    scores = [x["score"] for x in instances]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5
    labels = sem_seg.argmax(0).numpy()
    total = sum(int(mask_util.area(s["segmentation"])) for s in semantic)
    assert total == 32 * 40
    for s in semantic:
        assert int(mask_util.area(s["segmentation"])) == int((labels == s["category_id"] - 1).sum())
    assert [cats[k]["isthing"] for k in sorted(cats)] == [1, 1, 1, 0, 0, 0]


def test_joint_rounds_pool_the_calls(monkeypatch):
    _in_process(monkeypatch, joint)
    r = joint.run(
        _args(
            joint,
            [
                "--quick",
                "--sizes",
                "48",
                "48",
                "--proposals",
                "2",
                "--detections",
                "1",
                "--warmup",
                "0",
                "--repeats",
                "1",
                "--no-train",
                "--rounds",
                "2",
            ],
        )
    )
    (row,) = r["rows"]
    for net in ("joint", "instance", "semantic"):
        cell = row[net]["infer"]
        assert cell["rounds"] == 2 and len(cell["times_s"]) == 2
        assert cell["peak_rss_mb"] > 0
        assert "train" not in row[net]
    assert set(row["ratios"]) == {"infer"}


def test_precision_headline_and_goals():
    """The headline line and the goals of `precision` come from the measured rows: speed-up =
    fp32 time / bf16 time, PQ delta = bf16 PQ - fp32 PQ of the same checkpoint."""
    prec = precision
    rows = [
        {
            "model": m,
            "mode": mode,
            "variant": v,
            "median_s": t,
            "min_s": t / 2,
            "peak_rss_mb": 100.0,
        }
        for m, mode, v, t in [
            ("R50", "infer", "fp32", 3.0),
            ("R50", "infer", "bf16_cl", 1.0),
            ("R50", "train", "fp32", 4.0),
            ("R50", "train", "bf16_cl", 2.5),
            ("R18", "infer", "fp32", 0.1),
            ("R18", "infer", "bf16_cl", 0.09),
            ("R18", "train", "fp32", 0.5),
            ("R18", "train", "bf16_cl", 0.4),
        ]
    ]
    pq = {
        v: {"PQ": p, "PQ_th": 1.0, "PQ_st": 2.0, "mIoU": 3.0, "AP50": None, "images": 5}
        for v, p in (("fp32", 40.0), ("bf16_cl", 39.2))
    }
    r = {
        "variants": ["fp32", "bf16_cl"],
        "rows": rows,
        "threads": 2,
        "quick": False,
        "cpu_bf16": {"supported": True, "avx512_bf16": True, "amx_bf16": False},
        "cpu_model": "cpu",
        "repeats": 3,
        "train_repeats": 2,
        "load_average": [0.1, 0.2],
        "pq": {
            "config_file": "c.yaml",
            "weights": "w.pth",
            "trained_iters": None,
            "dataset": "val",
            "by_variant": pq,
        },
    }
    h = prec._headline(r, "bf16_cl")
    assert h["model"] == "R50"
    assert h["line"] == "bf16/fp32: inference 3.00x, train step 1.60x, PQ delta -0.80"
    assert h["met"] == {"inference": True, "train_step": False, "pq_delta": False}
    r["headline"] = h
    md = prec.markdown(r)
    assert "**bf16/fp32: inference 3.00x, train step 1.60x, PQ delta -0.80**" in md
    assert "| R18 | inference | 0.100 | 0.090 | 100 | 100 | **1.11x** |" in md
    assert "| bf16 + channels_last | 39.20 |" in md and "-0.80 |" in md
    assert h["fastest_call_speedups"] == {"infer": pytest.approx(3.0), "train": pytest.approx(1.6)}


def test_profile_quick_finds_every_phase():
    """`profile` on the quick config: every phase label of the training step (JSISNet's
    record_function labels, backward, optimizer) is seen, and the phases fit in the step."""
    prof = profile
    r = prof.run(_args(prof, ["--quick", "--variants", "fp32", "--top", "3"]))
    (x,) = r["rows"]
    assert set(x["phases_s_per_step"]) == set(prof.PHASES)
    assert all(v > 0 for v in x["phases_s_per_step"].values()), x["phases_s_per_step"]
    forward = sum(v for k, v in x["phases_s_per_step"].items() if k not in ("jsis.data",))
    assert forward <= 1.2 * x["wall_s_per_step"]
    assert len(x["top_ops"]) == 3 and x["top_ops"][0]["op"].startswith(("aten::", "torchvision::"))
    assert "| backward |" in r["markdown"] and "only exercise the code path" in r["markdown"]
    # the variants' steps run in turn, each variant in its own process; wall time with range
    lo, hi = x["wall_s_range"]
    assert r["interleaved"] and lo <= x["wall_s_per_step"] <= hi
    assert f"**{x['wall_s_per_step']:.3f}** ({lo:.3f}-{hi:.3f})" in r["markdown"]


def test_merge_benchmark_smoke_runs_both_sides():
    bench = merge
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(
        ["--instances", "3", "7", "--size", "48", "64", "--classes", "12", "--things", "5"]
    )
    args.quick, args.output, args.threads = True, None, 1
    res = bench.run(args)
    assert [r["instances"] for r in res["rows"]] == [3, 7]
    assert all(r["jsis_ms"] > 0 and r["detectron2_combine_ms"] > 0 for r in res["rows"])
    assert "| 7 |" in res["markdown"]
    assert len(res["load_average"]) == 2 and "Load average" in res["markdown"]
    # the synthetic prediction is detector-like: sorted scores >= 0.5, thing classes only
    sem_seg, inst = bench.make_prediction(6, 20, 30, 12, 5)
    assert sem_seg.shape == (12, 20, 30) and inst.pred_masks.shape == (6, 20, 30)
    assert (inst.scores[:-1] >= inst.scores[1:]).all() and (inst.scores >= 0.5).all()
    assert (inst.pred_classes < 5).all()


def test_roi_align_quick_both_sides_agree():
    """Against torchvision in float32 (forward + backward: the feature gradients), the
    separable side is exact to rounding in float32 and within bf16 precision in bfloat16;
    Detectron2's side is exact in float32 (it is torchvision); the speed-up is the ratio."""
    r = roi_align.run(_args(roi_align, ["--quick"]))
    assert [x["dtype"] for x in r["rows"]] == ["float32", "bfloat16"]
    for x in r["rows"]:
        assert x["mode"] == "forward + backward" and x["rois"] == 8
        assert x["separable_err"] < (1e-5 if x["dtype"] == "float32" else 0.05)
        assert x["d2_err"] == 0 if x["dtype"] == "float32" else x["d2_err"] > 0
        assert x["speedup"] == pytest.approx(x["d2_ms"] / x["separable_ms"])
        lo, hi = x["range_ms"]["separable"]  # the calls' range, around their median
        assert lo <= x["separable_ms"] <= hi
        assert f"| {x['separable_ms']:.1f} ({lo:.1f}-{hi:.1f}) |" in r["markdown"]
    assert "tiny, train" in r["markdown"] and "--quick" in r["markdown"]


def test_time_calls_interleaves_after_warmup():
    calls = []
    syncs = []
    fns = {"a": lambda: calls.append("a") or len(calls), "b": lambda: calls.append("b") or -1}
    t = time_calls(fns, repeats=3, warmup=2, cpu_time=True, synchronize=lambda: syncs.append(1))
    assert calls == ["a", "b"] * 5  # 2 warm-up rounds, then 3 timed, one of each side in turn
    assert len(syncs) == 2 * 2 * 3  # before and after every timed call, none in warm-up
    assert len(t["a"].wall) == len(t["a"].cpu) == 3 and all(x >= 0 for x in t["a"].wall)
    assert t["a"].last == 9 and t["b"].last == -1  # the last call's output
    assert t["a"].min <= t["a"].median and t["a"].summary()["min_s"] == t["a"].min
    assert t["b"].summary()["times_s"] == [round(x, 4) for x in t["b"].wall]
    t = time_calls({"x": lambda: 7}, repeats=0, warmup=1)
    assert t["x"].wall == [] and t["x"].cpu == [] and t["x"].last == 7


def test_markdown_table_layout_and_errors():
    assert markdown_table(["a", "b", "c"], [[1, "x", ""]]) == (
        "| a | b | c |\n|---|---:|---:|\n| 1 | x |  |"
    )
    assert markdown_table(["a", "b"], [], "cl").splitlines()[1] == "|:---:|---|"
    with pytest.raises(ValueError, match="align 'rr' must be 3"):
        markdown_table(["a", "b", "c"], [], "rr")
    with pytest.raises(ValueError, match=r"row \[1\] has 1 cells, not 2"):
        markdown_table(["a", "b"], [[1]])


@pytest.mark.parametrize(
    "mod",
    [hw, joint, mapper, merge, panoptic_fpn, bench_pq, precision, profile, roi_align, topk],
    ids=lambda m: m.__name__.split(".")[-1],
)
def test_markdown_reproduces_the_committed_results(mod):
    """Each benchmark's markdown(result), fed the committed JSON, gives the committed markdown:
    the table writer and the sentences are what produced the tables of docs/BENCHMARKS.md."""
    name = mod.__name__.split(".")[-1]
    with open(os.path.join(REPO, "docs", "benchmarks", f"{name}.json")) as f:
        result = json.load(f)
    if name in ("pq", "mapper"):  # measured before the result stated its core count (2)
        result.setdefault("cpu_count", 2)
    assert mod.markdown(result) == result["markdown"]
