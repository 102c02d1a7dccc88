"""jsis_d2.config: declared keys, paper defaults, loud failures."""
import pytest

from jsis_d2.config import ConfigError, get_jsis_cfg, setup_cfg


def test_paper_loss_weight_defaults():
    w = get_jsis_cfg().MODEL.JSIS.LOSS_WEIGHTS
    assert (w.RPN_OBJ, w.RPN_REG, w.DET_CLS, w.DET_REG, w.MASK, w.SEG) == (
        1.0, 1.0, 1.0, 0.15, 0.3, 1.0)


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
