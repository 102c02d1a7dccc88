"""Mixed precision (jsis_d2.precision): config keys, device checks, bf16 training and inference.

The bf16 tests need a CPU with bfloat16 support (oneDNN's check); they skip with the reason
elsewhere, like the CUDA test. The error paths run everywhere (support is faked off/on).
"""

import pytest
import torch

from benchmarks.common import random_inputs
from jsis_d2 import precision
from jsis_d2.config import ConfigError, setup_cfg
from jsis_d2.engine.trainer import build_step_trainer

from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

CONFIG = "configs/quick/jsis_R18_C4_quick.yaml"
BF16 = [
    "SOLVER.AMP.ENABLED",
    True,
    "SOLVER.AMP.PRECISION",
    "bfloat16",
    "TEST.PRECISION",
    "bfloat16",
]

needs_bf16 = pytest.mark.skipif(
    not precision.cpu_bf16_support()["supported"],
    reason=f"this CPU has no bfloat16 support: {precision.cpu_bf16_support()}",
)


def _model(opts=(), seed=0, device="cpu"):
    torch.manual_seed(seed)
    return build_model(setup_cfg(CONFIG, list(opts) + ["MODEL.DEVICE", device]))


_DEVICES = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(
            not precision.cpu_bf16_support()["supported"],
            reason=f"this CPU has no bfloat16 support: {precision.cpu_bf16_support()}",
        ),
    ),
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
            reason="needs CUDA with bf16",
        ),
    ),
]


@pytest.mark.parametrize(
    "opts, key",
    [
        (["TEST.PRECISION", "float16"], "TEST.PRECISION='float16' on MODEL.DEVICE='cpu'"),
        (["SOLVER.AMP.ENABLED", True], "SOLVER.AMP.PRECISION='float16' on MODEL.DEVICE='cpu'"),
        (["TEST.PRECISION", "fp8"], "TEST.PRECISION='fp8' is not one of"),
        (
            ["SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", "float32"],
            "SOLVER.AMP.PRECISION='float32' is not one of float16, bfloat16",
        ),
    ],
)
def test_unusable_precision_is_a_one_line_config_error(opts, key):
    with pytest.raises(ConfigError) as e:
        _model(opts)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_bf16_on_a_cpu_without_support_is_refused(monkeypatch):
    monkeypatch.setattr(
        precision,
        "cpu_bf16_support",
        lambda: {"supported": False, "avx512_bf16": False, "amx_bf16": False, "capability": "AVX2"},
    )
    with pytest.raises(
        ConfigError,
        match=r"TEST.PRECISION='bfloat16' on MODEL.DEVICE='cpu': "
        r"this CPU has no bfloat16 support",
    ):
        _model(["TEST.PRECISION", "bfloat16"])
    with pytest.raises(ConfigError, match="SOLVER.AMP.PRECISION='bfloat16'"):
        _model(BF16[:4])
    _model(["SOLVER.AMP.ENABLED", False, "SOLVER.AMP.PRECISION", "bfloat16"])  # AMP off: fine


def test_cpu_support_detection_reads_cpuinfo_and_onednn():
    s = precision.cpu_bf16_support()
    assert set(s) == {"supported", "avx512_bf16", "amx_bf16", "capability"}
    flags = open("/proc/cpuinfo").read().split()
    assert s["avx512_bf16"] == ("avx512_bf16" in flags)
    assert s["amx_bf16"] == ("amx_bf16" in flags)
    assert s["supported"] == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _backbone_dtypes(model):
    seen = []
    model.backbone.register_forward_hook(lambda m, i, o: seen.append(o["res4"].dtype))
    return seen


@needs_bf16
def test_bf16_training_step_matches_fp32_losses():
    """Same weights, same batch, same seed: every weighted loss is float32, finite, and within
    3% (relative) + 0.005 of fp32's; gradients are finite float32; autocast was on."""
    torch.set_num_threads(1)
    m32, m16 = _model(), _model(BF16)
    m16.load_state_dict(m32.state_dict())
    batch = random_inputs(64, 64, 2, train=True, num_classes=9, num_things=4, gt_per_image=3)
    dtypes = _backbone_dtypes(m16)
    losses = {}
    for name, m in (("fp32", m32), ("bf16", m16)):
        m.train()
        torch.manual_seed(1)
        with EventStorage(0):
            losses[name] = m(batch)
        sum(losses[name].values()).backward()
    assert dtypes == [torch.bfloat16]
    assert set(losses["bf16"]) == set(losses["fp32"]) and len(losses["fp32"]) == 6
    for k, v32 in losses["fp32"].items():
        v16 = losses["bf16"][k]
        assert v16.dtype == torch.float32 and torch.isfinite(v16), k
        assert abs(v16.item() - v32.item()) <= 0.03 * abs(v32.item()) + 0.005, (k, v16, v32)
    for p in m16.parameters():
        assert p.dtype == torch.float32
        assert p.grad is None or torch.isfinite(p.grad).all()


def _overfit(model, batch, iters):
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    with EventStorage(0):
        for _ in range(iters):
            loss = sum(model(batch).values())
            opt.zero_grad()
            loss.backward()
            opt.step()


def _category_map(panoptic):
    pan, info = panoptic
    out = torch.full_like(pan, -1)
    for s in info:
        out[pan == s["id"]] = s["category_id"]
    return out


@pytest.mark.parametrize("device", _DEVICES)
def test_bf16_inference_matches_fp32_on_a_trained_checkpoint(device):
    """A tiny model trained 30 steps on one batch (deterministic: fixed seeds, 1 thread),
    evaluated with the same weights in fp32 and bf16: outputs are float32 and the panoptic
    category of >= 98% of the pixels agrees (measured here: 99.3-99.9%), the semantic argmax
    on >= 98%, and bf16 autocast was on."""
    torch.set_num_threads(1)
    opts = ["MODEL.JSIS.INSTANCE_SCORE_THRESH", 0.3]
    m32 = _model(opts, device=device)
    batch = random_inputs(64, 64, 2, train=True, num_classes=9, num_things=4, gt_per_image=3)
    torch.manual_seed(2)
    _overfit(m32, batch, 30)
    m16 = _model(opts + ["TEST.PRECISION", "bfloat16"], device=device)
    m16.load_state_dict(m32.state_dict())
    dtypes = _backbone_dtypes(m16)
    images = [{k: d[k] for k in ("image", "height", "width")} for d in batch]
    m32.eval(), m16.eval()
    with torch.no_grad():
        out32, out16 = m32(images), m16(images)
    assert dtypes == [torch.bfloat16]
    for a, b in zip(out32, out16):
        assert b["sem_seg"].dtype == torch.float32
        assert b["instances"].scores.dtype == torch.float32
        assert b["proposals"].objectness_logits.dtype == torch.float32
        assert len(a["panoptic_seg"][1]) > 2  # the trained model finds segments
        agree = _category_map(a["panoptic_seg"]) == _category_map(b["panoptic_seg"])
        assert agree.float().mean() >= 0.98
        sem = a["sem_seg"].argmax(0) == b["sem_seg"].argmax(0)
        assert sem.float().mean() >= 0.98


@needs_bf16
def test_channels_last_model_gives_the_same_outputs():
    torch.set_num_threads(1)
    m = _model()
    mc = _model(["MODEL.JSIS.CHANNELS_LAST", True])
    mc.load_state_dict(m.state_dict())
    w = mc.backbone.stem.conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    images = random_inputs(64, 64, 1, num_classes=9, num_things=4)
    m.eval(), mc.eval()
    with torch.no_grad():
        a, b = m(images)[0], mc(images)[0]
    torch.testing.assert_close(a["sem_seg"], b["sem_seg"], atol=1e-3, rtol=1e-3)


class _Parts:
    model = data_loader = optimizer = None


def test_step_trainer_follows_solver_amp():
    """fp32: Detectron2's own step trainer is kept; bf16 on CPU: a SimpleTrainer (Detectron2's
    AMPTrainer is CUDA-only; the model autocasts itself)."""
    from detectron2.engine import AMPTrainer, SimpleTrainer

    parts = _Parts()
    fp32 = setup_cfg(CONFIG)
    assert build_step_trainer(fp32, parts) is parts
    if precision.cpu_bf16_support()["supported"]:
        loader = [[{}]]
        parts = SimpleTrainer(torch.nn.Linear(1, 1), loader, None)
        st = build_step_trainer(setup_cfg(CONFIG, BF16), parts)
        assert type(st) is SimpleTrainer and not isinstance(st, AMPTrainer)
        assert st.model is parts.model and st.data_loader is loader


@needs_bf16
def test_train_net_runs_bf16_training_and_evaluation(tmp_path):
    """tools/train_net.py's run() with SOLVER.AMP bf16 and TEST.PRECISION bf16: trains, logs
    the step trainer it used, evaluates (finite PQ) and checkpoints."""
    import json
    import os

    from jsis_d2.data.datasets import make_synthetic_datasets, register_synthetic_datasets
    from jsis_d2.engine.launcher import run

    names = {"train": "jsis_test_prec_train", "val": "jsis_test_prec_val"}
    make_synthetic_datasets(
        str(tmp_path / "syn"), num_train=2, num_val=1, image_size=64, register=False
    )
    register_synthetic_datasets(str(tmp_path / "syn"), names=names)
    out = tmp_path / "run"
    argv = [
        "--config-file",
        CONFIG,
        "OUTPUT_DIR",
        str(out),
        "DATASETS.TRAIN",
        f"('{names['train']}',)",
        "DATASETS.TEST",
        f"('{names['val']}',)",
        "SOLVER.MAX_ITER",
        "2",
        "SEED",
        "3",
        *map(str, BF16),
    ]
    assert run(argv) == 0
    log = (out / "log.txt").read_text()
    assert "Training with torch.bfloat16 autocast on cpu (SimpleTrainer)" in log
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    assert all(torch.isfinite(torch.tensor(r["total_loss"])) for r in rows if "total_loss" in r)
    pq = [r["panoptic_seg/PQ"] for r in rows if "panoptic_seg/PQ" in r]
    assert pq and all(p == p for p in pq)
    assert (out / "model_final.pth").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_amp_training_step(dtype):
    """On CUDA, SOLVER.AMP runs Detectron2's AMPTrainer: fp16 with its grad scaler, bf16
    without (a disabled scaler); one step gives finite float32 losses."""
    import itertools

    from detectron2.engine import AMPTrainer

    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = setup_cfg(
        CONFIG, ["MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.PRECISION", dtype]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = random_inputs(64, 64, 2, train=True, num_classes=9, num_things=4, gt_per_image=3)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    st = build_step_trainer(cfg, AMPTrainer(model, itertools.repeat(batch), opt))
    assert isinstance(st, AMPTrainer)
    assert st.grad_scaler.is_enabled() == (dtype == "float16")
    with EventStorage(0) as storage:
        st.iter = 0
        st.run_step()
        total = storage.latest()["total_loss"][0]
    assert total == total and abs(total) < float("inf")
    assert model.train_dtype == getattr(torch, dtype)


def test_fused_adamw_makes_the_same_update_as_the_loop():
    """SOLVER.ADAMW_FUSED only changes how AdamW runs: after 3 steps on the same gradients the
    weights agree with torch's per-tensor loop to 1e-6."""
    from jsis_d2.engine.trainer import build_optimizer

    weights = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
        cfg = setup_cfg(
            None,
            [
                "SOLVER.OPTIMIZER",
                "ADAMW",
                "SOLVER.BASE_LR",
                0.01,
                "SOLVER.WEIGHT_DECAY",
                0.01,
                "SOLVER.ADAMW_FUSED",
                fused,
            ],
        )
        opt = build_optimizer(cfg, model)
        assert opt.param_groups[0]["fused"] is fused
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=g)
            opt.step()
        weights[fused] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(weights[True], weights[False]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_low_precision_weights_are_cast_once_and_remade_when_a_weight_changes():
    """Conv/linear weights and biases only (normalization stays float32), the same copies on
    every call, new copies after an in-place update (optimizer step, load_state_dict) and after
    a parameter is replaced; clear() drops them."""
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.GroupNorm(2, 4),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    cache = precision.LowPrecisionWeights(torch.bfloat16)
    first = cache.for_module(m)
    assert sorted(first) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    assert all(t.dtype == torch.bfloat16 for t in first.values())
    assert torch.equal(first["0.weight"], m[0].weight.detach().to(torch.bfloat16))
    assert cache.for_module(m) is first
    with torch.no_grad():
        m[0].weight.add_(1.0)  # what an optimizer step does
    second = cache.for_module(m)
    assert second is not first
    assert torch.equal(second["0.weight"], m[0].weight.detach().to(torch.bfloat16))
    m.load_state_dict({k: torch.zeros_like(v) for k, v in m.state_dict().items()})
    assert cache.for_module(m)["3.weight"].abs().sum() == 0
    m[3].weight = torch.nn.Parameter(torch.ones(2, 4))
    assert cache.for_module(m)["3.weight"].sum() == 8
    third = cache.for_module(m)
    cache.clear()
    assert cache.for_module(m) is not third


@needs_bf16
def test_bf16_inference_uses_the_cast_once_weights_and_gives_autocasts_outputs():
    """Inference runs the convolutions on the bf16 copies (the parameters stay float32), and the
    outputs are bit-identical to casting at every call (plain autocast); a training step in
    between makes inference use the updated weights; train() drops the copies."""
    torch.set_num_threads(1)
    model = _model(["TEST.PRECISION", "bfloat16"])
    from jsis_d2.modeling.roi_align import SeparableROIAlign

    assert all(isinstance(p, SeparableROIAlign) for p in model.roi_heads.pooler.level_poolers)
    seen = []
    model.backbone.stem.conv1.register_forward_pre_hook(lambda m, i: seen.append(m.weight.dtype))
    images = random_inputs(64, 64, 1, num_classes=9, num_things=4)
    batch = random_inputs(64, 64, 1, train=True, num_classes=9, num_things=4, gt_per_image=2)

    def infer(cast_once):
        model.eval()
        cache = model.precision.weights
        if not cast_once:
            model.precision.weights = None
        with torch.no_grad():
            out = model(images)[0]
        model.precision.weights = cache
        return out

    for _ in range(2):
        a, b = infer(True), infer(False)
        assert torch.equal(a["sem_seg"], b["sem_seg"])
        assert torch.equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
        assert torch.equal(a["instances"].scores, b["instances"].scores)
        _overfit(model, batch, 1)  # in-place weight update; train() cleared the copies
        assert not model.precision.weights._copies
    # per round: cast-once inference, per-call inference, training step
    assert seen == [torch.bfloat16, torch.float32, torch.float32] * 2
    assert model.backbone.stem.conv1.weight.dtype == torch.float32


def test_precision_policy_runs_modules_on_cast_once_weights_at_inference_only():
    """At low-precision inference run() calls the module on the bf16 copies (its parameters stay
    float32) and float32() casts the results back; in training run() is a plain call under the
    training dtype, and train() dropped the copies; features() hands the backbone channels_last
    images when set. The policy adds nothing to a state_dict."""
    conv = torch.nn.Conv2d(3, 4, 3)
    seen = []
    conv.register_forward_pre_hook(lambda m, i: seen.append((m.weight.dtype, i[0].is_contiguous())))
    x = torch.randn(1, 3, 8, 8)
    policy = precision.PrecisionPolicy(test_dtype=torch.bfloat16, channels_last=True)
    assert not policy.state_dict()
    policy.eval()
    with policy.autocast("cpu"):
        y = policy.features(conv, x)
    assert seen == [(torch.bfloat16, False)] and y.dtype == torch.bfloat16
    (y32,) = policy.float32(y)
    assert y32.dtype == torch.float32 and torch.equal(y32, y.float())
    assert policy.weights._copies
    policy.train()
    assert not policy.weights._copies
    with policy.autocast("cpu"):
        y = policy.run(conv, x)
    assert seen[-1] == (torch.float32, True) and y.dtype == torch.float32
    assert policy.float32(y)[0] is y
