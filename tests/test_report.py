"""metrics.json reading: a torn last line (a killed run) is skipped or set aside, a corrupt
line in the middle is an error naming it."""

import json

import pytest

from jsis_d2.engine.checks import UsageError
from jsis_d2.engine.report import read_metrics_json, set_aside_torn_metrics_line

ROWS = [{"iteration": 0, "total_loss": 3.0}, {"iteration": 1, "total_loss": 2.5}]
TORN = '{"iteration": 2, "total_lo'


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def log_lines(capture_log):
    return capture_log("jsis_d2.engine.report")


def _good():
    return "".join(json.dumps(r) + "\n" for r in ROWS)


def test_torn_last_line_is_skipped_with_a_warning(tmp_path, log_lines):
    path = _write(tmp_path / "metrics.json", _good() + TORN)
    assert read_metrics_json(path) == ROWS
    assert any("metrics.json:3: skipping a torn last line" in m for m in log_lines)


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = _write(tmp_path / "metrics.json", json.dumps(ROWS[0]) + "\n@@garbage\n" + _good())
    with pytest.raises(UsageError, match=r"metrics.json:2: not a JSON line"):
        read_metrics_json(path)


def test_torn_line_is_set_aside_before_a_resumed_run_appends(tmp_path):
    path = _write(tmp_path / "metrics.json", _good() + TORN)
    assert set_aside_torn_metrics_line(path) == TORN
    assert (tmp_path / "metrics.json").read_text() == _good()
    assert (tmp_path / "metrics.json.torn").read_text() == TORN + "\n"
    with open(path, "a") as f:  # what Detectron2's JSONWriter does next
        f.write(json.dumps({"iteration": 2}) + "\n")
    assert read_metrics_json(path) == ROWS + [{"iteration": 2}]
    assert set_aside_torn_metrics_line(path) == ""  # a sound file is left as is
    assert set_aside_torn_metrics_line(str(tmp_path / "absent.json")) == ""


def test_complete_last_record_without_newline_is_kept(tmp_path):
    path = _write(tmp_path / "metrics.json", _good() + json.dumps({"iteration": 2}))
    assert set_aside_torn_metrics_line(path) == ""
    assert read_metrics_json(path) == ROWS + [{"iteration": 2}]
    assert not (tmp_path / "metrics.json.torn").exists()
