"""``--resume`` restores the whole training state (model, iteration, LR scheduler, optimizer
moments/momentum, AMP grad scaler) on both detectron2 stacks, refuses a checkpoint past
SOLVER.MAX_ITER, and leaves metrics.json with one value per iteration.

The quick config (64x64, tiny R18) trains a few iterations on CPU, in this process.
"""

import copy
import json

import pytest
import torch
from _quick_train import tiny_synthetic_root, train_argv

from jsis_d2.engine.launcher import run, setup
from jsis_d2.engine.report import drop_metrics_after
from jsis_d2.engine.trainer import Trainer

from detectron2.engine import HookBase, default_argument_parser, hooks

NAMES = {"train": "jsis_test_resume_train", "val": "jsis_test_resume_val"}


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    return tiny_synthetic_root(tmp_path_factory, NAMES, num_val=1)


def _argv(out, *extra, max_iter=4):
    warmup = ("SOLVER.WARMUP_ITERS", "2")
    return train_argv(out, NAMES["train"], "()", *warmup, *extra, max_iter=max_iter)


class _Stop(Exception):
    """Stands for a kill after a given iteration."""


class _Record(HookBase):
    """Records, before each step, the optimizer's state and every param group's LR (what that
    step will use); raises :class:`_Stop` after step ``stop_after``."""

    def __init__(self, stop_after):
        self.stop_after = stop_after
        self.before = {}

    def before_step(self):
        opt = self.trainer.optimizer
        lrs = [g["lr"] for g in opt.param_groups]
        self.before[self.trainer.iter] = (copy.deepcopy(opt.state_dict()["state"]), lrs)

    def after_step(self):
        if self.trainer.iter == self.stop_after:
            raise _Stop


def _train(argv, stop_after=None, resume=False, log_every_step=False):
    """Train in this process; stopped (as by a kill) after step ``stop_after`` if given."""
    args = default_argument_parser().parse_args((["--resume"] if resume else []) + argv)
    trainer = Trainer(setup(args))
    if log_every_step:  # Detectron2's PeriodicWriter writes metrics.json every 20 steps
        (writer,) = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicWriter)]
        writer._period = 1
    record = _Record(stop_after)
    trainer.register_hooks([record])
    trainer.resume_or_load(resume=resume)
    if stop_after is None:
        trainer.train()
    else:
        with pytest.raises(_Stop):
            trainer.train()
    return record


def _assert_same_state(a, b):
    assert a.keys() == b.keys() and a, "optimizer state differs in its parameters"
    for i in a:
        assert a[i].keys() == b[i].keys(), i
        for key in a[i]:
            va, vb = a[i][key], b[i][key]
            if torch.is_tensor(va):
                assert torch.equal(va, vb), (i, key)
            else:
                assert va == vb, (i, key)


@pytest.mark.parametrize("optimizer", ["ADAMW", "SGD"])
def test_resume_restores_optimizer_and_next_lr(tiny_synthetic, tmp_path, optimizer, isolated_logs):
    """4 iterations (checkpoints after steps 1 and 3; warm-up over steps 0-1): the run cut
    after step 1 and resumed has, before step 2, the optimizer state and LR that the
    uninterrupted run had before step 2."""
    opts = ("SOLVER.OPTIMIZER", optimizer)
    whole = _train(_argv(tmp_path / "whole", *opts), stop_after=2)
    cut = tmp_path / "cut"
    _train(_argv(cut, *opts), stop_after=1)
    assert (cut / "last_checkpoint").read_text() == "model_0000001.pth"
    resumed = _train(_argv(cut, *opts), stop_after=2, resume=True)

    assert sorted(resumed.before) == [2]
    state, lrs = resumed.before[2]
    want_state, want_lrs = whole.before[2]
    assert lrs == want_lrs and lrs != whole.before[0][1]  # not the warm-up LR again
    _assert_same_state(state, want_state)
    log = (cut / "log.txt").read_text()
    assert (
        "(restored: model, iteration, LR scheduler, optimizer state): training continues at "
        "iteration 2 of 4"
    ) in log


def test_amp_trainer_state_includes_the_grad_scaler(tiny_synthetic, tmp_path, isolated_logs):
    """With Detectron2's AMPTrainer as step trainer (float16 on CUDA), the trainer's state
    holds the grad scaler's; loading it restores the scale."""
    from detectron2.engine import AMPTrainer

    args = default_argument_parser().parse_args(_argv(tmp_path / "amp", max_iter=2))
    trainer = Trainer(setup(args))
    inner = trainer._trainer
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer._trainer = AMPTrainer(
        inner.model, inner.data_loader, inner.optimizer, grad_scaler=scaler
    )
    state = trainer.state_dict()
    assert state["_trainer"]["grad_scaler"]["scale"] == 1024.0
    state["_trainer"]["grad_scaler"]["scale"] = 64.0
    trainer.load_state_dict(state)
    assert scaler.get_scale() == 64.0
    # a checkpoint saved without AMP (no scaler state) resumes with AMP: optimizer restored,
    # scaler left as it is (was: KeyError 'grad_scaler')
    del state["_trainer"]["grad_scaler"]
    trainer.load_state_dict(state)
    assert scaler.get_scale() == 64.0 and "optimizer state" in trainer._restored


def test_resume_past_max_iter_is_refused(tiny_synthetic, tmp_path, capsys, isolated_logs):
    """The checkpoint holds the step trainer's state (optimizer) once, under "_trainer", on
    both stacks; a resume with SOLVER.MAX_ITER below its iteration is one line, and the
    checkpoint is left as it was."""
    out = tmp_path / "run"
    assert run(_argv(out, max_iter=2)) == 0
    state = torch.load(out / "model_final.pth", weights_only=False)["trainer"]
    assert set(state) == {"iteration", "hooks", "_trainer"}
    assert set(state["_trainer"]) == {"iteration", "optimizer"}
    assert state["_trainer"]["optimizer"]["state"]
    assert run(_argv(out, "--resume", max_iter=1)) == 2
    err = capsys.readouterr().err
    assert (
        f"train_net: error: --resume: checkpoint {out / 'model_final.pth'} is at iteration 1, "
        "past SOLVER.MAX_ITER=1: nothing to train" in err
    )
    assert "Traceback" not in err
    again = torch.load(out / "model_final.pth", weights_only=False)["trainer"]
    assert again["iteration"] == 1


def test_kill_and_resume_leaves_one_metrics_row_per_iteration(
    tiny_synthetic, tmp_path, isolated_logs
):
    """A run killed after step 2 (checkpoint after step 1) had logged step 2; the resumed run
    logs it again: metrics.json keeps one row per iteration, the old one goes aside."""
    out = tmp_path / "run"
    _train(_argv(out), stop_after=2, log_every_step=True)
    rows = [json.loads(line) for line in open(out / "metrics.json")]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    _train(_argv(out), resume=True, log_every_step=True)
    iters = [json.loads(line)["iteration"] for line in open(out / "metrics.json")]
    assert iters == [0, 1, 2, 3]
    aside = [json.loads(line) for line in open(f"{out}/metrics.json.superseded")]
    assert aside == rows[2:]


def test_drop_metrics_after_truncates_in_place(tmp_path):
    path = tmp_path / "metrics.json"
    rows = [{"iteration": i, "loss": i} for i in (0, 1, 2, 3)] + [{"iteration": 1, "x": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(path, "a") as appender:  # Detectron2's JSONWriter holds it open like this
        assert drop_metrics_after(str(path), 1) == 3
        appender.write(json.dumps({"iteration": 2, "loss": 9}) + "\n")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == rows[:2] + [{"iteration": 2, "loss": 9}]
    assert drop_metrics_after(str(path), 5) == 0
    assert drop_metrics_after(str(tmp_path / "none.json"), 0) == 0
    aside = [json.loads(x) for x in open(str(path) + ".superseded")]
    assert aside == rows[2:]
