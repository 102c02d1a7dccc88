"""JSISEvaluator across 2 processes (torch.distributed, gloo on CPU) vs one process.

detectron2 0.6's ``launch`` needs CUDA, so the workers start the process group themselves, as
``launch`` would, with the gloo backend; ``detectron2.utils.comm`` then gathers over it. They
end as the project's launcher does (:func:`destroy_process_groups`: barrier, destroy, drop
detectron2's cached groups): a gloo group still alive when a worker exits can abort it.
The images are split between the ranks the way Detectron2's inference sampler splits a dataset
(contiguous shards); the perturbed image lives on rank 1 only, so a gather that lost rank 1's
state (or double-counted rank 0's) changes every metric.
"""

import json
import os

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from test_evaluator import LS, _image, _outputs_from_gt

import jsis_d2  # noqa: F401  (first: its compat shims must precede detectron2 in the workers)
from jsis_d2.data.panoptic_png import write_panoptic_png
from jsis_d2.engine.distributed import destroy_process_groups
from jsis_d2.evaluation import JSISEvaluator

from detectron2.data import MetadataCatalog

SIZES = [(24, 32), (30, 20), (16, 16), (20, 28)]
NAME = "jsis_test_eval_distributed"
WORLD = 2


def _dataset(root):
    """Dataset dicts (contiguous ids) with GT PNGs under ``root``, and the GT id maps."""
    os.makedirs(root, exist_ok=True)
    dicts, gt_ids = [], {}
    for i, (h, w) in enumerate(SIZES):
        ids, segs = _image(h, w, i)
        path = os.path.join(root, f"{i:03d}.png")
        if not os.path.exists(path):
            write_panoptic_png(path, ids)
        dicts.append(
            {
                "file_name": f"{i:03d}.jpg",
                "image_id": i,
                "height": h,
                "width": w,
                "pan_seg_file_name": path,
                "segments_info": segs,
            }
        )
        gt_ids[i] = ids
    return dicts, gt_ids


def _outputs(d, ids):
    """Perfect outputs, except image 2: one person missed by every branch, sky half wrong."""
    out = _outputs_from_gt(d, ids)
    if d["image_id"] != 2:
        return out
    pan, pinfo = out["panoptic_seg"]
    pan = pan.clone()
    pan[pan == 302] = 0
    pan[:, : pan.shape[1] // 2][pan[:, : pan.shape[1] // 2] == 100] = 200  # sky -> road
    out["panoptic_seg"] = (pan, [p for p in pinfo if p["id"] != 302])
    sem = out["sem_seg"]
    sem[:, :, : sem.shape[2] // 2] = 0
    sem[3, :, : sem.shape[2] // 2] = 1  # left half predicted road
    inst = out["instances"]
    out["instances"] = inst[inst.pred_masks.flatten(1).float().sum(1) != float((ids == 302).sum())]
    return out


def _register():
    if NAME not in MetadataCatalog.list():
        MetadataCatalog.get(NAME).set(
            **LS.metadata(), label_divisor=1000, ignore_label=255, evaluator_type="jsis_panoptic"
        )


def _run(root, out_dir, rank, world):
    """Evaluate this rank's contiguous shard of the dataset; the result dict."""
    _register()
    dicts, gt_ids = _dataset(os.path.join(root, "gt"))
    n = len(dicts)
    shard = dicts[n * rank // world : n * (rank + 1) // world]
    ev = JSISEvaluator(NAME, output_dir=out_dir, distributed=world > 1)
    ev.reset()
    for d in shard:
        ev.process([d], [_outputs(d, gt_ids[d["image_id"]])])
    return ev.evaluate()


def _worker(rank, root):
    dist.init_process_group(
        "gloo", init_method=f"file://{root}/rendezvous", rank=rank, world_size=WORLD
    )
    try:
        results = _run(root, os.path.join(root, "eval_dist"), rank, WORLD)
        with open(os.path.join(root, f"results_rank{rank}.json"), "w") as f:
            json.dump(results, f)
    finally:
        destroy_process_groups()
    assert not dist.is_initialized()


def _flatten(results):
    return {f"{task}/{k}": v for task, r in results.items() for k, v in r.items()}


def test_two_processes_gather_to_the_single_process_results(tmp_path):
    root = str(tmp_path)
    _dataset(os.path.join(root, "gt"))  # written once, before the workers read it
    mp.spawn(_worker, args=(root,), nprocs=WORLD, join=True)

    with open(os.path.join(root, "results_rank1.json")) as f:
        assert json.load(f) == {}  # only the main process reports
    with open(os.path.join(root, "results_rank0.json")) as f:
        dist_results = _flatten(json.load(f))
    single = _flatten(_run(root, os.path.join(root, "eval_single"), 0, 1))

    assert set(dist_results) == set(single)
    assert 0 < single["panoptic_seg/PQ"] < 100 and single["sem_seg/mIoU"] < 100
    assert single["segm/AP50"] < 100 and single["rpn/num_images"] == len(SIZES)
    for key, value in single.items():
        if isinstance(value, float) and np.isnan(value):
            assert np.isnan(dist_results[key]), key
        else:
            assert dist_results[key] == pytest.approx(value, abs=1e-9), key

    # the main process wrote the JSON of every image; each rank wrote its own PNGs
    with open(os.path.join(root, "eval_dist", "panoptic_predictions.json")) as f:
        saved = json.load(f)
    assert sorted(a["image_id"] for a in saved["annotations"]) == list(range(len(SIZES)))
    for a in saved["annotations"]:
        assert os.path.isfile(
            os.path.join(root, "eval_dist", "panoptic_predictions", a["file_name"])
        )
