"""The main job on Detectron2's engine: tools/train_net.py's run() on a tiny synthetic set.

Each run trains the quick R18 config (64x64 inputs) for a few iterations on CPU.
"""

import glob
import json
import os
import shutil

import pytest
import torch
from _quick_train import tiny_synthetic_root, train_argv

from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets
from jsis_d2.engine.launcher import run
from jsis_d2.engine.report import read_metrics_json

NAMES = {"train": "jsis_test_tn_train", "val": "jsis_test_tn_val"}


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    return tiny_synthetic_root(tmp_path_factory, NAMES, num_val=2)


def _argv(out, *extra, max_iter=4):
    return train_argv(out, NAMES["train"], f"('{NAMES['val']}',)", *extra, max_iter=max_iter)


def _final_results(out):
    """The evaluation results the trainer logged last (metrics.json, flattened keys)."""
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    evals = [r for r in rows if "panoptic_seg/PQ" in r]
    assert evals, "no evaluation was logged"
    return evals[-1]


def test_train_evaluate_resume_and_eval_only(tiny_synthetic, tmp_path):
    out = tmp_path / "run"
    assert run(_argv(out)) == 0
    for f in ("model_final.pth", "model_0000001.pth", "metrics.json", "config.yaml", "log.txt"):
        assert (out / f).is_file(), f
    trained = _final_results(out)
    for key in ("panoptic_seg/PQ", "panoptic_seg/SQ", "panoptic_seg/RQ", "sem_seg/mIoU"):
        assert key in trained
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(out))

    # A kill while model_final.pth was written (before saves were atomic) left it empty, with
    # the tag naming it: resume falls back to model_0000003.pth (the last iteration's), has
    # nothing left to train, and writes model_final.pth again.
    # The same kill tore the last line of metrics.json: it is set aside, not glued to the
    # next line the resumed run appends.
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    (out / "model_final.pth").write_bytes(b"")
    with open(out / "metrics.json", "a") as f:
        f.write('{"iteration": 3, "total_l')
    assert run(_argv(out, "--resume")) == 0
    log = (out / "log.txt").read_text()
    assert "names model_final.pth, which is empty (0 bytes)" in log
    assert "continues at iteration 4 of 4" in log
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 3
    assert (out / "metrics.json.torn").read_text() == '{"iteration": 3, "total_l\n'
    assert read_metrics_json(str(out / "metrics.json"))[-1]["panoptic_seg/PQ"] >= 0

    # Kill after the checkpoint at iteration 1 (2 iterations done): drop what came later.
    os.remove(out / "model_final.pth")
    (out / "last_checkpoint").write_text("model_0000001.pth")
    assert run(_argv(out, "--resume")) == 0
    log = (out / "log.txt").read_text()
    assert "Resumed from checkpoint" in log and "continues at iteration 2 of 4" in log
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 3

    # --eval-only with the final checkpoint reproduces the metrics training reported.
    resumed = _final_results(out)
    ev = tmp_path / "eval"
    rc = run(_argv(ev, "--eval-only", "MODEL.WEIGHTS", str(out / "model_final.pth")))
    assert rc == 0
    log = (ev / "log.txt").read_text()
    assert f"Evaluating checkpoint {out / 'model_final.pth'}" in log
    saved = json.load(open(ev / "eval_results.json"))["results"]
    assert saved["panoptic_seg"]["PQ"] == pytest.approx(resumed["panoptic_seg/PQ"], abs=1e-9)
    assert saved["sem_seg"]["mIoU"] == pytest.approx(resumed["sem_seg/mIoU"], abs=1e-9)


def test_existing_run_is_not_overwritten_without_resume(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    assert run(_argv(out)) == 2
    assert "--resume" in capsys.readouterr().err


def test_nan_loss_stops_with_clear_message(tiny_synthetic, tmp_path, capsys):
    # lambda_6 = inf makes the weighted semantic loss non-finite at the first iteration.
    rc = run(_argv(tmp_path / "nan", "MODEL.JSIS.LOSS_WEIGHTS.SEG", "1e999"))
    assert rc == 3
    err = capsys.readouterr().err
    assert "training stopped" in err and "NaN" in err and "iteration=0" in err


@pytest.mark.parametrize(
    "argv_extra, message",
    [
        (("DATASETS.TEST", "('no_such_dataset',)"), "unknown dataset 'no_such_dataset'"),
        (("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "12"), "NUM_CLASSES=12"),
        (("MODEL.NO_SUCH_KEY", "1"), "NO_SUCH_KEY"),
    ],
)
def test_bad_jobs_fail_with_one_clean_line(tiny_synthetic, tmp_path, capsys, argv_extra, message):
    assert run(_argv(tmp_path / "bad", *argv_extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_config_and_foreign_checkpoint(tiny_synthetic, tmp_path, capsys):
    assert run(["--config-file", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    # A checkpoint of a model with another number of classes is refused for evaluation.
    out = tmp_path / "run"
    assert run(_argv(out, max_iter=1)) == 0
    state = torch.load(out / "model_final.pth", weights_only=False)
    for k in list(state["model"]):
        if k.startswith("sem_seg_head.predictor"):
            state["model"][k] = torch.zeros((12,) + tuple(state["model"][k].shape[1:]))
    torch.save(state, tmp_path / "other_k.pth")
    rc = run(_argv(tmp_path / "ev", "--eval-only", "MODEL.WEIGHTS", str(tmp_path / "other_k.pth")))
    assert rc == 2
    assert "another number of classes" in capsys.readouterr().err
    shutil.rmtree(out)


def test_separate_run_logs_keeps_each_log_to_its_run(tmp_path):
    """Two runs in one process (tools/ablation.py): each log.txt holds only its own run."""
    import logging

    from jsis_d2.engine.launcher import separate_run_logs

    from detectron2.utils.logger import setup_logger

    name = "jsis_d2_test_separate_logs"
    lg = logging.getLogger(name)
    for run_name in ("a", "b"):
        with separate_run_logs((name,)):
            setup_logger(output=str(tmp_path / run_name), name=name)
            lg.info("line from run %s", run_name)
    log_a = (tmp_path / "a" / "log.txt").read_text()
    log_b = (tmp_path / "b" / "log.txt").read_text()
    assert "line from run a" in log_a and "line from run b" not in log_a
    assert "line from run b" in log_b
    assert lg.handlers == []  # nothing left behind: the next run prints each line once


def test_every_sample_bad_in_a_loader_worker_is_one_line(tmp_path, capsys, isolated_logs):
    """A BadSampleError raised inside a DataLoader worker reaches the main process with the
    worker's traceback in its message (and Detectron2 logs it again): the job still ends with
    the one line of the original error and exit code 2."""
    root = str(tmp_path / "syn")
    make_synthetic_datasets(root, num_train=2, num_val=1, image_size=64, register=False)
    names = {"train": "jsis_test_tn_allbad_train", "val": "jsis_test_tn_allbad_val"}
    register_synthetic_datasets(root, names=names)
    for png in glob.glob(os.path.join(root, "train", "panoptic", "*.png")):
        os.remove(png)
    rc = run(
        _argv(
            tmp_path / "bad",
            "DATASETS.TRAIN",
            f"('{names['train']}',)",
            "DATASETS.TEST",
            f"('{names['val']}',)",
            "DATALOADER.SKIP_BAD_SAMPLES",
            "True",
            "DATALOADER.NUM_WORKERS",
            "1",
        )
    )
    captured = capsys.readouterr()
    assert rc == 2, captured.err[-3000:]
    errors = [line for line in captured.err.splitlines() if line.startswith("train_net: error:")]
    assert len(errors) == 1 and "no usable training sample" in errors[0], captured.err[-3000:]
    assert "Traceback" not in captured.err + captured.out
    assert "Original Traceback" not in errors[0]


def test_missing_or_truncated_initial_weights_fail_with_one_line(
    tiny_synthetic, tmp_path, capsys, isolated_logs
):
    missing = tmp_path / "nowhere" / "R-18.pth"
    assert run(_argv(tmp_path / "a", "MODEL.WEIGHTS", str(missing))) == 2
    err = capsys.readouterr().err
    assert f"train_net: error: MODEL.WEIGHTS file not found: {missing}\n" in err
    assert "Traceback" not in err
    good = tmp_path / "w.pth"
    torch.save({"model": {"x": torch.zeros(1000)}}, good)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[:2000])
    assert run(_argv(tmp_path / "b", "MODEL.WEIGHTS", str(torn))) == 2
    err = capsys.readouterr().err
    assert f"train_net: error: MODEL.WEIGHTS file {torn} is truncated" in err
    assert "Traceback" not in err
    torn_pkl = tmp_path / "torn.pkl"
    torn_pkl.write_bytes(b"\x80\x04\x95")
    assert run(_argv(tmp_path / "c", "MODEL.WEIGHTS", str(torn_pkl))) == 2
    assert "is truncated" in capsys.readouterr().err


def test_resume_with_changed_config_keeps_the_saved_one(tiny_synthetic, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(_argv(out, max_iter=2)) == 0
    saved = (out / "config.yaml").read_text()
    # An optimizer value the checkpoint would override: refused, nothing rewritten.
    assert run(_argv(out, "--resume", "SOLVER.BASE_LR", "0.5", max_iter=2)) == 2
    err = capsys.readouterr().err
    assert "SOLVER.BASE_LR" in err and "checkpoint's optimizer keeps the saved values" in err
    assert (out / "config.yaml").read_text() == saved
    # Extending the schedule: runs; config.yaml stays, the new config goes beside it.
    assert run(_argv(out, "--resume", "TEST.EVAL_PERIOD", "0", max_iter=4)) == 0
    assert (out / "config.yaml").read_text() == saved
    resumed = (out / "config.resume-1.yaml").read_text()
    assert "MAX_ITER: 4" in resumed and "MAX_ITER: 2" in saved
    log = (out / "log.txt").read_text()
    assert "SOLVER.MAX_ITER 2 -> 4" in log and "config.resume-1.yaml" in log
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 3


def test_a_step_at_max_iter_is_one_line(tiny_synthetic, tmp_path, capsys, isolated_logs):
    rc = run(_argv(tmp_path / "steps", "SOLVER.STEPS", "(4,)", max_iter=4))
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    assert "SOLVER.STEPS=(4,) holds SOLVER.MAX_ITER=4" in err and "Traceback" not in err


def test_known_failures_are_described_in_one_line():
    import errno

    from torch._utils import ExceptionWrapper

    from jsis_d2.data.dataset_mapper import BadSampleError
    from jsis_d2.engine.launcher import describe_failure

    full = OSError(errno.ENOSPC, "No space left on device", "/out/.model_final.pth.tmp")
    text, code = describe_failure(full)
    assert code == 2 and "no space left" in text and "/out/.model_final.pth.tmp" in text
    assert describe_failure(OSError(errno.EACCES, "denied")) is None  # not a known cause
    assert describe_failure(KeyError("bug")) is None
    try:
        raise BadSampleError("sample 3: PNG missing")
    except BadSampleError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BadSampleError) as e:
        wrapped.reraise()
    assert "Original Traceback" in str(e.value)
    assert describe_failure(e.value) == ("train_net: error: sample 3: PNG missing", 2)


def test_full_disk_behind_another_error_is_one_line():
    """torch reports a full disk during torch.save as a RuntimeError raised while handling
    the ENOSPC OSError: the ENOSPC in ``__context__`` still gives the one line."""
    import errno

    from jsis_d2.engine.launcher import describe_failure

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/.model.pth.tmp-1")
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/3")  # noqa: B904
    except RuntimeError as e:
        text, code = describe_failure(e)
    assert code == 2 and text.startswith("train_net: error: no space left on the device")
    assert "/out/.model.pth.tmp-1" in text


def test_dataset_errors_are_one_line_and_test_sets_checked_up_front(
    tmp_path, capsys, isolated_logs
):
    root = str(tmp_path / "syn")
    make_synthetic_datasets(root, num_train=2, num_val=2, image_size=64, register=False)
    names = {"train": "jsis_test_tn_dserr_train", "val": "jsis_test_tn_dserr_val"}
    register_synthetic_datasets(root, names=names)
    opts = ("DATASETS.TRAIN", f"('{names['train']}',)", "DATASETS.TEST", f"('{names['val']}',)")
    # a missing validation image: reported before training, not after it
    val_image = os.path.join(root, "val", "images", "000001.png")
    os.rename(val_image, val_image + ".away")
    assert run(_argv(tmp_path / "a", *opts)) == 2
    err = capsys.readouterr().err
    assert (
        f"train_net: error: dataset '{names['val']}': 1 file(s) missing, the first: {val_image}\n"
    ) in err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "a" / "metrics.json")
    os.rename(val_image + ".away", val_image)
    # an unknown category id in the training JSON (without SKIP_BAD_SAMPLES)
    js = os.path.join(root, "train", "panoptic_train.json")
    data = json.load(open(js))
    data["annotations"][0]["segments_info"][0]["category_id"] = 99
    json.dump(data, open(js, "w"))
    assert run(_argv(tmp_path / "b", *opts)) == 2
    (err,) = [e for e in capsys.readouterr().err.splitlines() if e.startswith("train_net")]
    assert err.startswith(f"train_net: error: dataset '{names['train']}' cannot be loaded: {js}:")
    assert "unknown category id 99" in err


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    import jsis_d2.engine.launcher as launcher

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher, "launch", interrupted)
    assert run(_argv(tmp_path / "run")) == 130
    assert capsys.readouterr().err == (
        "train_net: interrupted; checkpoints already in OUTPUT_DIR are intact (saves are "
        "atomic): continue with --resume\n"
    )
