"""jsis_d2.config: declared keys, paper defaults, loud failures."""

import pytest

from jsis_d2.config import ConfigError, get_jsis_cfg, setup_cfg


def test_paper_loss_weight_defaults():
    w = get_jsis_cfg().MODEL.JSIS.LOSS_WEIGHTS
    assert (w.RPN_OBJ, w.RPN_REG, w.DET_CLS, w.DET_REG, w.MASK, w.SEG) == (
        1.0,
        1.0,
        1.0,
        0.15,
        0.3,
        1.0,
    )


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        setup_cfg(str(missing))


def test_unknown_key_in_yaml_fails_loudly(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text("MODEL:\n  JSIS:\n    LOSS_WEIGTHS: {}\n")
    with pytest.raises(ConfigError, match="typo.yaml"):
        setup_cfg(str(f))


def test_overrides_apply_and_odd_list_fails():
    cfg = setup_cfg(None, ["MODEL.JSIS.LOSS_WEIGHTS.SEG", "0.5"])
    assert cfg.MODEL.JSIS.LOSS_WEIGHTS.SEG == 0.5
    with pytest.raises(ConfigError, match="KEY VALUE"):
        setup_cfg(None, ["MODEL.JSIS.MERGE"])
    with pytest.raises(ConfigError, match="NOT_A_KEY"):
        setup_cfg(None, ["MODEL.NOT_A_KEY", "1"])


def test_optimizer_choice_builds_sgd_or_adamw_with_d2_param_groups():
    import torch

    from jsis_d2.engine.trainer import build_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    assert get_jsis_cfg().SOLVER.OPTIMIZER == "SGD"  # the paper's optimizer stays the default
    sgd = build_optimizer(setup_cfg(None, ["SOLVER.BASE_LR", "0.1"]), model)
    assert type(sgd).__name__ == "SGD" and sgd.param_groups[0]["momentum"] == 0.9
    cfg = setup_cfg(
        None,
        [
            "SOLVER.OPTIMIZER",
            "adamw",
            "SOLVER.BASE_LR",
            "0.002",
            "SOLVER.WEIGHT_DECAY",
            "0.01",
            "SOLVER.ADAMW_BETAS",
            "(0.8, 0.99)",
        ],
    )
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert all(g["lr"] == 0.002 and g["betas"] == (0.8, 0.99) for g in opt.param_groups)
    assert all(g["fused"] for g in opt.param_groups)  # SOLVER.ADAMW_FUSED (default on)
    # Detectron2's groups: the GroupNorm weight and bias get no weight decay (WEIGHT_DECAY_NORM 0)
    norm_params = {id(p) for p in model[1].parameters()}
    for g in opt.param_groups:
        on_norm = {id(p) in norm_params for p in g["params"]}
        assert len(on_norm) == 1
        assert g["weight_decay"] == (0.0 if on_norm.pop() else 0.01)


def test_unknown_optimizer_fails_at_config_time():
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER='LAMB'.*SGD, ADAMW"):
        setup_cfg(None, ["SOLVER.OPTIMIZER", "LAMB"])


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"a.yaml": '_BASE_: "../nope/Base.yaml"\nSOLVER:\n  MAX_ITER: 3\n'},
            r"cannot read config file .*nope/Base.yaml \(a _BASE_ in the chain of .*a.yaml\): "
            "No such file",
        ),
        (
            {"a.yaml": "SOLVER:\n  MAX_ITER: 3\n   BASE_LR: [1,\n"},
            r"YAML syntax error in .*a.yaml, line 3, column 11: "
            r"mapping values are not allowed here",
        ),
        (
            {"a.yaml": '_BASE_: "b.yaml"\n', "b.yaml": "SOLVER:\n\tMAX_ITER: 3\n"},
            r"YAML syntax error in .*b.yaml, line 2, column 1: found character '\\t'",
        ),
        (
            {"a.yaml": "- 1\n- 2\n"},
            r"a.yaml \(or a _BASE_ it names\) is empty or not a YAML mapping",
        ),
        ({"a.yaml": ""}, r"is empty or not a YAML mapping"),
    ],
)
def test_broken_config_files_give_one_line_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        setup_cfg(str(tmp_path / "a.yaml"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("SOLVER.IMS_PER_BATCH", "0", "SOLVER.IMS_PER_BATCH=0: must be >= 1"),
        ("SOLVER.MAX_ITER", "0", "SOLVER.MAX_ITER=0: must be >= 1"),
        ("SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD=0: must be >= 1"),
        ("DATALOADER.NUM_WORKERS", "-1", "DATALOADER.NUM_WORKERS=-1: must be >= 0"),
        ("SOLVER.STEPS", "(700, 300)", "SOLVER.STEPS=(700, 300): must be increasing"),
        ("SOLVER.BASE_LR", "-0.1", "SOLVER.BASE_LR=-0.1: must be >= 0"),
        ("MODEL.DEVICE", "gpu", "MODEL.DEVICE='gpu': not a device name"),
        ("INPUT.JSIS.CROWD_SEM_SEG", "void", "INPUT.JSIS.CROWD_SEM_SEG='void': one of"),
        ("MODEL.JSIS.BRANCHES", "['semantics']", "MODEL.JSIS.BRANCHES must be a non-empty"),
        ("MODEL.JSIS.BRANCHES", "[]", "MODEL.JSIS.BRANCHES must be a non-empty"),
        ("MODEL.JSIS.MERGE", "panopticfpn", "MODEL.JSIS.MERGE must be one of"),
    ],
)
def test_values_no_job_can_run_with_are_one_config_error(key, value, message):
    with pytest.raises(ConfigError) as e:
        setup_cfg(None, [key, value])
    assert str(e.value).startswith(message)


def test_cuda_device_without_gpu_is_a_usage_error(monkeypatch):
    import torch

    from jsis_d2.engine.checks import UsageError, check_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UsageError, match="MODEL.DEVICE='cuda' but no CUDA GPU is visible"):
        check_device(setup_cfg(None, ["MODEL.DEVICE", "cuda"]))
    check_device(setup_cfg(None, ["MODEL.DEVICE", "cpu"]))
