"""tools/predict.py: the ONNX backend where torch, detectron2 and jsis_d2 cannot be imported,
resuming after a crash or a SIGKILL, output folder protection, the COCO panoptic format as
panopticapi reads it, and the PyTorch backend scoring exactly as the evaluator does."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from _onnx_standin import CATEGORIES, expected_prediction, make_image, write_standin_model
from PIL import Image

from jsis_d2.config import setup_cfg
from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets
from jsis_d2.data.panoptic_png import read_panoptic_png
from jsis_d2.engine.distributed import launch_supports_cpu
from jsis_d2.evaluation import pq_compute
from jsis_runtime import cli
from jsis_runtime.image_io import read_image_rgb
from jsis_runtime.onnx_model import OnnxPanopticModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "predict.py")
CONFIG = os.path.join(REPO, "configs", "quick", "jsis_R18_C4_quick.yaml")
BLOCKED = ("torch", "torchvision", "detectron2", "jsis_d2", "cv2", "pycocotools")

# Runs tools/predict.py with the heavy stack unimportable, as in a deploy environment; then
# says which of the blocked packages got imported anyway (none may).
_DEPLOY_WRAPPER = """
import runpy, sys
BLOCKED = {blocked!r}
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(name + " cannot be imported here (deploy environment)")
        return None
sys.meta_path.insert(0, _Block())
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]
{before}
sys.argv = [{tool!r}] + sys.argv[1:]
try:
    runpy.run_path({tool!r}, run_name="__main__")
finally:
    sys.stderr.write("\\nIMPORTED: " + repr(sorted(
        {{n.split(".")[0] for n in sys.modules}} & set(BLOCKED))) + "\\n")
"""


def _run_deployed(args, before=""):
    """tools/predict.py ``args`` in a subprocess without torch & co; (exit code, stderr)."""
    code = _DEPLOY_WRAPPER.format(blocked=BLOCKED, tool=TOOL, before=before)
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert "IMPORTED: []" in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, proc.stderr


def _images(folder, sizes=((32, 48), (48, 96), (16, 24), (64, 48))):
    """Images a/img0.png, b/img0.png, b/img1.jpg, ... (same file names in two folders)."""
    paths = []
    for i, (h, w) in enumerate(sizes):
        sub = "a" if i == 0 else "b"
        name = f"img{max(0, i - 1)}.png" if i < 3 else f"img{i}.png"
        path = os.path.join(folder, sub, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(make_image(h, w, i)).save(path)
        paths.append(path)
    return paths


def _check_predictions(out, paths, model_dir_fmt="BGR"):
    """OUT/predictions.json and PNGs hold the stand-in's predictions of ``paths``."""
    data = json.load(open(os.path.join(out, "predictions.json")))
    assert [a["file_name"] for a in data["annotations"]] == [
        os.path.relpath(p, os.path.commonpath([os.path.dirname(q) for q in paths])) for p in paths
    ]
    for ann, path in zip(data["annotations"], paths):
        image = np.asarray(Image.open(path).convert("RGB"))
        want_ids, want_info = expected_prediction(image, fmt=model_dir_fmt)
        ids = read_panoptic_png(os.path.join(out, "panoptic", ann["file_name"]))
        assert np.array_equal(ids, want_ids)
        want = [
            (s["id"], s["category_id"], s["area"], s.get("score")) for s in want_info if s["area"]
        ]
        got = [(s["id"], s["category_id"], s["area"], s.get("score")) for s in ann["segments_info"]]
        assert got == want
        assert ann["image_id"] == os.path.splitext(ann["file_name"])[0]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 11, 12, 13, 14, 15]
    return data


# ----------------------------------------------------------------------------- ONNX backend


def test_onnx_backend_runs_without_torch_and_names_unreadable_images(tmp_path):
    model = write_standin_model(tmp_path / "model")
    paths = _images(str(tmp_path / "in"))
    bad = tmp_path / "in" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG truncated")
    out = str(tmp_path / "out")
    args = ["--backend", "onnx", "--model", model, "--input", str(tmp_path / "in" / "a")]
    args += [str(tmp_path / "in" / "b"), "--output", out, "--figures", "--num-threads", "1"]
    code, err = _run_deployed(args)
    assert code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("predict: error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "1 input image(s)" in errors[0]
    _check_predictions(out, paths)  # the readable images, in the listing order
    assert os.path.isfile(os.path.join(out, "figures", "a", "img0.png"))
    # the rerun retries only the unreadable image and ends the same way
    code2, err2 = _run_deployed(args)
    assert code2 == 2 and "5 image(s): 4 finished already, 1 to predict" in err2


def test_deploy_wrapper_really_blocks_torch(tmp_path):
    """The harness above would pass vacuously if the blocker did nothing: prove it bites; and
    the PyTorch backend there ends with one line pointing to --backend onnx."""
    code = _DEPLOY_WRAPPER.format(blocked=BLOCKED, tool=TOOL, before="import torch")
    proc = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert proc.returncode != 0 and "torch cannot be imported here" in proc.stderr
    args = ["--config-file", CONFIG, "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    code, err = _run_deployed(args)
    errors = [line for line in err.splitlines() if line.startswith("predict:")]
    assert code == 2 and len(errors) == 1 and "use --backend onnx" in errors[0]


def test_onnx_run_resumes_after_a_crash_to_the_same_json(tmp_path, monkeypatch, isolated_logs):
    model = write_standin_model(tmp_path / "model")
    paths = _images(str(tmp_path / "in"))
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    base = ["--backend", "onnx", "--model", model, "--input", str(tmp_path / "in" / "*" / "*")]
    assert cli.main([*base, "--output", full, "--no-progress"]) == 0

    calls = []
    original = OnnxPanopticModel.predict

    def crashing(self, image):
        calls.append(image.shape)
        if len(calls) == 3:
            raise RuntimeError("injected failure")
        return original(self, image)

    monkeypatch.setattr(OnnxPanopticModel, "predict", crashing)
    with pytest.raises(RuntimeError, match="injected failure"):
        cli.main([*base, "--output", resumed, "--no-progress"])
    assert not os.path.exists(os.path.join(resumed, "predictions.json"))
    assert len(os.listdir(os.path.join(resumed, "records", "b"))) == 1  # a/img0, b/img0 done

    calls.clear()
    monkeypatch.setattr(
        OnnxPanopticModel, "predict", lambda self, im: calls.append(1) or original(self, im)
    )
    assert cli.main([*base, "--output", resumed, "--no-progress"]) == 0
    assert len(calls) == len(paths) - 2  # only the unfinished images
    for f in ("predictions.json", "panoptic/a/img0.png", "panoptic/b/img3.png"):
        assert (
            open(os.path.join(full, f), "rb").read() == open(os.path.join(resumed, f), "rb").read()
        )


def test_onnx_run_killed_mid_run_resumes_to_the_same_json(tmp_path):
    """SIGKILL after 2 images (inside predict, the writer thread possibly mid-write)."""
    model = write_standin_model(tmp_path / "model")
    _images(str(tmp_path / "in"))
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    base = ["--backend", "onnx", "--model", model, "--input", str(tmp_path / "in/*/*.png")]
    base.append("--output")
    kill_after_2 = (  # at the 3rd image, once the writer thread has finished the first 2
        "import glob, os, signal, sys, time\n"
        "from jsis_runtime.onnx_model import OnnxPanopticModel as M\n"
        "_p, _n = M.predict, []\n"
        "def _predict(self, im):\n"
        "    _n.append(1)\n"
        "    if len(_n) == 3:\n"
        "        out = sys.argv[sys.argv.index('--output') + 1]\n"
        "        end = time.time() + 60\n"
        "        while time.time() < end and len(glob.glob(out + '/records/*/*.json')) < 2:\n"
        "            time.sleep(0.01)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return _p(self, im)\n"
        "M.predict = _predict\n"
    )
    code, _ = _run_deployed([*base, full])
    assert code == 0
    wrapper = _DEPLOY_WRAPPER.format(blocked=BLOCKED, tool=TOOL, before=kill_after_2)
    proc = subprocess.run([sys.executable, "-c", wrapper, *base, killed], capture_output=True)
    assert proc.returncode == -9
    assert not os.path.exists(os.path.join(killed, "predictions.json"))
    code, err = _run_deployed([*base, killed])
    assert code == 0 and "4 image(s): 2 finished already, 2 to predict" in err
    a = open(os.path.join(full, "predictions.json"), "rb").read()
    assert a == open(os.path.join(killed, "predictions.json"), "rb").read()


def test_output_folder_of_another_run_or_foreign_files_is_refused(tmp_path, capsys, isolated_logs):
    model = write_standin_model(tmp_path / "model")
    _images(str(tmp_path / "in"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    args = ["--backend", "onnx", "--model", model, "--output", str(out), "--no-progress"]
    assert cli.main([*args, "--input", str(tmp_path / "in" / "a")]) == 2
    assert "is not empty and holds no prediction run" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["mine.txt"]
    assert cli.main([*args, "--input", str(tmp_path / "in" / "a"), "--overwrite"]) == 0
    capsys.readouterr()  # that run's log lines
    assert cli.main([*args, "--input", str(tmp_path / "in" / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other arguments (differing: images, images_sha256)" in err[0]
    assert cli.main([*args, "--input", str(tmp_path / "in" / "b"), "--overwrite"]) == 0
    data = json.load(open(out / "predictions.json"))
    assert [a["file_name"] for a in data["annotations"]] == ["img0.png", "img1.png", "img3.png"]
    assert not os.path.exists(out / "panoptic" / "a")  # the replaced run's files are gone
    assert (out / "mine.txt").read_text() == "user data"  # the user's are not


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config-file", CONFIG], "--backend onnx takes no --config-file"),
        (["--image-root", "x"], "--image-root goes with --image-info"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, extra, message, isolated_logs):
    model = write_standin_model(tmp_path / "model")
    argv = ["--backend", "onnx", "--model", model, "--input", str(tmp_path), *extra]
    assert cli.main([*argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_image_info_run_is_read_by_panopticapi_as_meant(tmp_path, isolated_logs):
    """Predictions for images listed by a COCO JSON (ids from it), scored by panopticapi's own
    pq_compute against a ground truth made of the stand-in's expected maps (computed without
    jsis_runtime): PQ 100 only if the PNGs, ids and category ids are read as meant."""
    from panopticapi.evaluation import pq_compute as reference_pq_compute

    from jsis_d2.data.panoptic_png import write_panoptic_png

    root = str(tmp_path / "syn")
    paths = make_synthetic_datasets(root, num_train=1, num_val=3, image_size=48, register=False)
    val = paths["val"]
    gt = json.load(open(val["panoptic_json"]))
    gt["categories"] = [dict(c, isthing=int(c["isthing"])) for c in CATEGORIES]
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    for image, ann in zip(gt["images"], gt["annotations"]):
        ids, info = expected_prediction(
            read_image_rgb(os.path.join(val["image_root"], image["file_name"]))
        )
        write_panoptic_png(str(gt_dir / ann["file_name"]), ids)
        ann["segments_info"] = [
            {"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "area": s["area"]}
            for s in info
            if s["area"]
        ]
    gt_json = str(tmp_path / "gt.json")
    json.dump(gt, open(gt_json, "w"))

    model = write_standin_model(tmp_path / "model")
    out = str(tmp_path / "out")
    argv = ["--backend", "onnx", "--model", model, "--image-info", val["panoptic_json"]]
    argv += ["--image-root", val["image_root"], "--output", out, "--no-progress"]
    assert cli.main(argv) == 0
    pred_json = os.path.join(out, "predictions.json")
    assert [a["image_id"] for a in json.load(open(pred_json))["annotations"]] == [
        im["id"] for im in gt["images"]
    ]
    ref = reference_pq_compute(gt_json, pred_json, str(gt_dir), os.path.join(out, "panoptic"))
    assert ref["All"]["pq"] == 1.0 and ref["All"]["n"] == 2
    ours = pq_compute(gt_json, pred_json, str(gt_dir), os.path.join(out, "panoptic"))
    assert ours["All"] == ref["All"]


# ----------------------------------------------------------------------------- PyTorch backend

NAMES = {"train": "jsis_test_predict_train", "val": "jsis_test_predict_val"}


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    """3 synthetic val images whose ground truth is rewritten to one "grass" segment each
    (the weights below predict mostly grass: PQ is then not 0 with untrained weights)."""
    from jsis_d2.data.panoptic_png import write_panoptic_png

    root = str(tmp_path_factory.mktemp("syn"))
    paths = make_synthetic_datasets(root, num_train=2, num_val=3, image_size=64, register=False)
    val = paths["val"]
    gt = json.load(open(val["panoptic_json"]))
    for ann in gt["annotations"]:
        write_panoptic_png(os.path.join(val["panoptic_root"], ann["file_name"]), np.ones((64, 64)))
        ann["segments_info"] = [{"id": 1, "category_id": 12, "iscrowd": 0, "area": 64 * 64}]
    json.dump(gt, open(val["panoptic_json"], "w"))
    register_synthetic_datasets(root, names=NAMES)
    return val


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint of the quick model whose semantic head favours "grass" (k = 5; random
    weights otherwise), so that PQ is not trivially 0."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"]))
    state = model.state_dict()
    bias = [k for k in state if k.startswith("sem_seg_head") and k.endswith("bias")][-1]
    assert state[bias].shape == (9,), bias
    state[bias][5] += 30.0  # "grass"
    path = tmp_path_factory.mktemp("w") / "model_final.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return str(path)


def _opts(weights):
    """Weights and datasets; no instance passes the merge (the untrained ones would cover
    the image)."""
    datasets = ["DATASETS.TRAIN", f"('{NAMES['train']}',)", "DATASETS.TEST", f"('{NAMES['val']}',)"]
    return ["MODEL.WEIGHTS", weights, *datasets, "MODEL.JSIS.INSTANCE_SCORE_THRESH", "1.0"]


def test_pytorch_predictions_score_as_the_evaluator(
    tiny_synthetic, weights, tmp_path, isolated_logs
):
    """pq_compute(gt, OUT/predictions.json) == train_net --eval-only's PQ for the same
    weights, and the maps are the evaluator's own saved predictions."""
    from jsis_d2.engine.launcher import run as train_net

    val = tiny_synthetic
    ev_dir = str(tmp_path / "eval")
    argv = ["--config-file", CONFIG, "--eval-only", "OUTPUT_DIR", ev_dir, *_opts(weights)]
    assert train_net(argv) == 0
    evaluated = json.load(open(os.path.join(ev_dir, "eval_results.json")))["results"]
    out = str(tmp_path / "out")
    argv = ["--config-file", CONFIG, "--image-info", val["panoptic_json"], "--image-root"]
    argv += [val["image_root"], "--output", out, "--no-progress", "--opts", *_opts(weights)]
    assert cli.main(argv) == 0
    pq = pq_compute(val["panoptic_json"], os.path.join(out, "predictions.json"),
                    val["panoptic_root"], os.path.join(out, "panoptic"))  # fmt: skip
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        assert 100 * pq[group]["pq"] == pytest.approx(evaluated["panoptic_seg"]["PQ" + suffix])
        assert 100 * pq[group]["sq"] == pytest.approx(evaluated["panoptic_seg"]["SQ" + suffix])
    assert pq["All"]["pq"] > 0
    saved_dir = os.path.join(ev_dir, "inference", NAMES["val"])
    saved = json.load(open(os.path.join(saved_dir, "panoptic_predictions.json")))["annotations"]
    ours = {
        a["image_id"]: a
        for a in json.load(open(os.path.join(out, "predictions.json")))["annotations"]
    }
    assert len(saved) == len(ours) == 3
    for ann in saved:
        mine = ours[ann["image_id"]]
        a = read_panoptic_png(os.path.join(saved_dir, "panoptic_predictions", ann["file_name"]))
        b = read_panoptic_png(os.path.join(out, "panoptic", mine["file_name"]))
        assert np.array_equal(a, b)
        keys = ("id", "category_id", "isthing", "area")
        assert [[s[k] for k in keys] for s in ann["segments_info"]] == [
            [s[k] for k in keys] for s in mine["segments_info"]
        ]


def test_pytorch_backend_refuses_random_weights(tmp_path, capsys, isolated_logs):
    argv = ["--config-file", CONFIG, "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    Image.fromarray(make_image(8, 8, 0)).save(tmp_path / "x.png")
    assert cli.main([*argv, "--opts", "MODEL.WEIGHTS", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MODEL.WEIGHTS is empty" in err[0]
    assert not os.path.exists(tmp_path / "o")


needs_cpu_launch = pytest.mark.skipif(
    torch.cuda.is_available() or not launch_supports_cpu(),
    reason="several CPU processes need detectron2's gloo launch (official stack)",
)


@needs_cpu_launch
def test_two_processes_write_the_same_json_as_one(tiny_synthetic, weights, tmp_path, isolated_logs):
    """The label space comes from the built-in synthetic dataset's name (the spawned workers
    register the built-in names when they import jsis_d2, not the test's own names)."""
    val = tiny_synthetic
    outs = {}
    builtin = [
        "DATASETS.TRAIN",
        "('jsis_synthetic_train',)",
        "DATASETS.TEST",
        "('jsis_synthetic_val',)",
    ]
    for n in (1, 2):
        out = outs[n] = str(tmp_path / f"out{n}")
        argv = ["--config-file", CONFIG, "--image-info", val["panoptic_json"], "--image-root"]
        argv += [val["image_root"], "--output", out, "--no-progress", "--num-gpus", str(n)]
        assert cli.main([*argv, "--opts", *_opts(weights), *builtin]) == 0
    a = open(os.path.join(outs[1], "predictions.json"), "rb").read()
    assert a == open(os.path.join(outs[2], "predictions.json"), "rb").read()
    assert len(json.loads(a)["annotations"]) == 3
