"""tools/demo.py and JSISPredictor on bad input: clashing names, unreadable files, an --output
that is a file, 16-bit images, and missing or unfitting weights."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

from jsis_d2.config import setup_cfg
from jsis_d2.engine.checks import UsageError
from jsis_d2.predictor import JSISPredictor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "quick", "jsis_R18_C4_quick.yaml")
pytestmark = pytest.mark.usefixtures("isolated_logs")


def _load_demo():
    spec = importlib.util.spec_from_file_location("demo", os.path.join(REPO, "tools", "demo.py"))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


@pytest.fixture(scope="module")
def demo():
    return _load_demo()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A checkpoint that fits the quick config's model (random weights: only the file matters)."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"]))
    path = tmp_path_factory.mktemp("w") / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 0}, path)
    return str(path)


def _image(path, value=(90, 140, 200), size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return str(path)


def _other_k_checkpoint(weights, path):
    """``weights`` with a semantic predictor of 3 classes (another K than the config's),
    saved to ``path``."""
    state = torch.load(weights, weights_only=False)
    state["model"] = {
        k: torch.zeros((3,) + tuple(v.shape[1:])) if k.startswith("sem_seg_head.predictor") else v
        for k, v in state["model"].items()
    }
    torch.save(state, path)


def _argv(inputs, out, weights, *opts):
    return [
        "--config-file",
        CONFIG,
        "--input",
        *inputs,
        "--output",
        str(out),
        "--opts",
        "MODEL.WEIGHTS",
        weights,
        "MODEL.DEVICE",
        "cpu",
        *opts,
    ]


def test_output_names_are_distinct_and_deterministic(demo):
    names = demo.output_names(["/d/a/x.jpg", "/d/a/x.png", "/d/b/x.jpg", "/d/b/y.jpg"])
    assert names == ["a/x.jpg.png", "a/x.png.png", "b/x.png", "b/y.png"]
    assert demo.output_names(["/d/a/x.jpg", "/d/a/x.png", "/d/b/x.jpg", "/d/b/y.jpg"]) == names
    assert demo.output_names(["/d/x.jpg"]) == ["x.png"]
    # a second-round clash ("x.jpg" keeps its extension, "x.jpg.bmp" has the stem "x.jpg")
    tricky = demo.output_names(["/d/x.jpg", "/d/x.png", "/d/x.jpg.bmp"])
    assert len(set(tricky)) == 3


def test_same_stems_give_one_picture_each(demo, weights, tmp_path):
    inputs = [
        _image(tmp_path / "in" / "a" / "x.jpg"),
        _image(tmp_path / "in" / "a" / "x.png", value=(10, 20, 30)),
        _image(tmp_path / "in" / "b" / "x.jpg", value=(200, 10, 10)),
    ]
    assert demo.main(_argv(inputs, tmp_path / "out", weights)) == 0
    written = sorted(
        os.path.relpath(os.path.join(d, f), tmp_path / "out")
        for d, _, files in os.walk(tmp_path / "out")
        for f in files
    )
    assert written == ["a/x.jpg.png", "a/x.png.png", "b/x.png"]


def test_unreadable_input_is_skipped_and_named(demo, weights, tmp_path, capsys):
    good = _image(tmp_path / "in" / "good.png")
    bad = tmp_path / "in" / "bad.jpg"
    bad.write_bytes(b"not a JPEG at all")
    assert demo.main(_argv([str(tmp_path / "in")], tmp_path / "out", weights)) == 2
    err = capsys.readouterr().err
    assert "demo: error: 1 input file(s) could not be read" in err and str(bad) in err
    assert "Traceback" not in err
    assert os.listdir(tmp_path / "out") == ["good.png"] and os.path.isfile(good)


def test_output_that_is_a_file_or_an_input_is_refused(demo, weights, tmp_path, capsys):
    image = _image(tmp_path / "x.png")
    existing = tmp_path / "result.png"
    existing.write_bytes(b"the user's file")
    assert demo.main(_argv([image], existing, weights)) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert existing.read_bytes() == b"the user's file"
    assert demo.main(_argv([image], tmp_path, weights)) == 2  # x.png -> x.png over itself
    assert "would overwrite an input" in capsys.readouterr().err


def test_16bit_input_is_not_drawn_white(demo, weights, tmp_path):
    values = np.linspace(0, 65535, 40 * 48).astype(np.uint16).reshape(40, 48)
    Image.fromarray(values).save(tmp_path / "gray16.png")
    assert demo.main(_argv([str(tmp_path / "gray16.png")], tmp_path / "out", weights)) == 0
    picture = np.asarray(Image.open(tmp_path / "out" / "gray16.png").convert("L"))
    top_left = picture[:40, :48]  # panel 1: the image itself
    assert abs(float(top_left.mean()) - 127.5) < 10  # was 255 (clipped)


def test_missing_or_unfitting_weights_are_refused(demo, weights, tmp_path, capsys):
    image = _image(tmp_path / "x.png")
    assert demo.main(_argv([image], tmp_path / "o1", "")) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    _other_k_checkpoint(weights, tmp_path / "other_k.pth")
    assert demo.main(_argv([image], tmp_path / "o2", str(tmp_path / "other_k.pth"))) == 2
    err = capsys.readouterr().err
    assert "another number of classes" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o1") and not os.path.exists(tmp_path / "o2")


def test_predictor_refuses_random_or_partial_weights(weights, tmp_path):
    cfg = setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    with pytest.raises(UsageError, match="MODEL.WEIGHTS is empty"):
        JSISPredictor(cfg)
    out = JSISPredictor(cfg, allow_random_init=True)(np.zeros((32, 32, 3), np.uint8))
    assert out["sem_seg"].shape[1:] == (32, 32)
    state = torch.load(weights, weights_only=False)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("roi_heads")}
    torch.save(state, tmp_path / "partial.pth")
    cfg = setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(tmp_path / "partial.pth")])
    with pytest.raises(UsageError, match="randomly initialized.*roi_heads"):
        JSISPredictor(cfg)


@pytest.mark.parametrize("fmt", ["BGR", "RGB"])
def test_predictor_takes_bgr_and_resizes_to_the_fixed_size(fmt):
    """DefaultPredictor's input convention (BGR, flipped for an RGB model) with the paper's
    fixed-size resize (aspect ratio not kept) instead of ResizeShortestEdge."""
    from jsis_d2.data.augmentations import FixedSizeResize

    cfg = setup_cfg(
        CONFIG,
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
            "INPUT.FORMAT",
            fmt,
            "INPUT.JSIS.FIXED_SIZE",
            "[48, 64]",
        ],
    )
    predictor = JSISPredictor(cfg, allow_random_init=True)
    seen = []
    predictor.model = lambda inputs: seen.append(inputs[0]) or [{}]
    bgr = np.random.RandomState(0).randint(0, 256, (30, 50, 3)).astype(np.uint8)
    predictor(bgr)
    x = seen[0]
    assert x["image"].shape == (3, 48, 64) and (x["height"], x["width"]) == (30, 50)
    want = bgr[:, :, ::-1] if fmt == "RGB" else bgr
    want = FixedSizeResize((48, 64)).get_transform(want).apply_image(want)
    assert torch.equal(x["image"], torch.from_numpy(want.astype(np.float32).transpose(2, 0, 1)))
    with pytest.raises(ValueError, match=r"expected an HxWx3 image, got shape \(30, 50\)"):
        predictor(bgr[:, :, 0])


def _video(path, frames=2):
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 32))
    for i in range(frames):
        writer.write(np.full((32, 32, 3), 40 * i, np.uint8))
    writer.release()
    return str(path)


def _video_argv(video, out, weights, *opts):
    argv = _argv([], out, weights, *opts)
    i = argv.index("--input")
    return argv[:i] + ["--video-input", video] + argv[i + 1 :]


def test_video_output_that_is_the_input_a_folder_or_unknown_is_refused(
    demo, weights, tmp_path, capsys
):
    clip = _video(tmp_path / "clip.mp4")
    before = open(clip, "rb").read()
    cases = [
        (clip, "is the input video"),
        (str(tmp_path), "is a folder; give a video file"),
        (str(tmp_path / "out.xyz"), "unknown video extension"),
        (str(tmp_path / "clip.mp4" / "out.mp4"), f"{clip} is a file, not a folder"),
    ]
    for out, message in cases:
        assert demo.main(_video_argv(clip, out, weights)) == 2, out
        err = capsys.readouterr().err
        assert err.startswith("demo: error: --output") and message in err, err
        assert err.count("\n") == 1
    assert open(clip, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_an_input_that_matches_nothing_is_one_line(demo, weights, tmp_path, capsys):
    """The listing is jsis_runtime.inputs' (its RuntimeUsageError): one ``demo: error:`` line
    naming the input, exit code 2; a folder named like an image is not an input."""
    pattern = str(tmp_path / "nope*.jpg")
    assert demo.main(_argv([pattern], tmp_path / "o", weights)) == 2
    assert capsys.readouterr().err == (
        f"demo: error: --input {pattern!r}: no such file, folder or pattern\n"
    )
    (tmp_path / "in" / "folder.jpg").mkdir(parents=True)
    assert demo.expand_inputs([str(tmp_path / "in")]) == []


def test_inputs_datasets_and_weights_that_cannot_work_are_one_line(demo, weights, tmp_path, capsys):
    image = _image(tmp_path / "in" / "x.png")
    (tmp_path / "empty").mkdir()
    assert demo.main(_argv([str(tmp_path / "empty")], tmp_path / "o", weights)) == 2
    assert "no image found" in capsys.readouterr().err
    assert demo.main(_argv([image], tmp_path / "in" / "x.png" / "o", weights)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert demo.main(_argv([image], tmp_path / "o", weights, "DATASETS.TEST", "()")) == 2
    assert "DATASETS.TEST is empty" in capsys.readouterr().err
    assert demo.main(_argv([image], tmp_path / "o", weights, "DATASETS.TEST", "('nope',)")) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    pkl = tmp_path / "w.pkl"
    pkl.write_bytes(b"\x80\x04\x95 torn")
    assert demo.main(_argv([image], tmp_path / "o", str(pkl))) == 2
    assert f"{pkl} is truncated or not a checkpoint" in capsys.readouterr().err
    # a .pt of another model: refused like a .pth (was: loaded with warnings, PQ 0)
    _other_k_checkpoint(weights, tmp_path / "other_k.pt")
    assert demo.main(_argv([image], tmp_path / "o", str(tmp_path / "other_k.pt"))) == 2
    assert "another number of classes" in capsys.readouterr().err
    # weights that record another training label space than DATASETS.TEST[0]'s
    from detectron2.data import MetadataCatalog

    cats = [dict(c) for c in MetadataCatalog.get("jsis_synthetic_val").categories]
    cats[0]["name"] = "something else"
    state = torch.load(weights, weights_only=False)
    state["label_space"] = {"categories": cats}
    torch.save(state, tmp_path / "other_labels.pth")
    assert demo.main(_argv([image], tmp_path / "o", str(tmp_path / "other_labels.pth"))) == 2
    err = capsys.readouterr().err
    assert "was trained on another label space than dataset 'jsis_synthetic_val'" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "o")


def test_image_over_the_pixel_limit_is_skipped(demo, weights, tmp_path, capsys, monkeypatch):
    big = _image(tmp_path / "in" / "big.png", size=(40, 48))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1920 px > 2 x 100: Pillow raises
    assert demo.main(_argv([big], tmp_path / "out", weights)) == 2
    err = capsys.readouterr().err
    assert "could not be read and were skipped: " + big in err and "Traceback" not in err
