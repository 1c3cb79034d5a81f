"""The training recipe: schedules, freezing, early stopping, lr_find, warm start,
Ctrl-C, checkpoints and resume, diverging fits."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TARGETS, small_estimator
from sklearn.base import clone
from sklearn.model_selection import KFold, cross_validate
from skorch.callbacks import Callback, EarlyStopping

from sk_multitask import MultiTaskImageEstimator
from sk_multitask.cli import main as cli_main
from sk_multitask.network._backbones import SimpleCNN


class _Record(Callback):
    """Keep a copy of the backbone's state and what the optimizer did, after each epoch."""

    def initialize(self):
        self.states_ = []
        return self

    def on_epoch_end(self, net, **kwargs):
        self.states_.append(
            {k: v.detach().clone() for k, v in net.module_.backbone.state_dict().items()}
        )


class _Interrupt(Callback):
    """Press Ctrl-C in the middle of epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=None, **kwargs):
        if training and len(net.history) == self.epoch and len(net.history[-1, "batches"]) == 2:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory):
    """A local state-dict file for simple_cnn: the backbone starts 'pretrained'."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "simple_cnn.pt"
    torch.save(SimpleCNN().state_dict(), path)
    return path


def _trace(est):
    """The heads' learning rate at every training batch (validation batches have none)."""
    return [b["event_lr"] for epoch in est.history_[:, "batches"] for b in epoch if "event_lr" in b]


def _batches_per_epoch(n_train, batch_size):
    return n_train // batch_size if n_train > batch_size else 1


def test_onecycle_trace_equals_torch_onecycle(image_set):
    est = small_estimator(image_set, max_epochs=3, lr=3e-3).fit(image_set, image_set[TARGETS])
    traced = _trace(est)

    n_train = int((~image_set["is_valid"]).sum())
    steps = 3 * _batches_per_epoch(n_train, 32)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.3
    )
    expected = []
    for _ in range(steps):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()

    assert len(traced) == steps
    np.testing.assert_allclose(traced, expected, rtol=1e-12)
    assert est.history_[:, "lr"] == [traced[i - 1] for i in np.cumsum([steps // 3] * 3)]
    assert est.history_[:, "backbone_lr"] == est.history_[:, "lr"]  # scratch: scale 1


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_other_schedules(image_set, schedule):
    est = small_estimator(image_set, max_epochs=2, lr=2e-3, lr_schedule=schedule)
    est.fit(image_set, image_set[TARGETS])
    traced = np.array(_trace(est))

    if schedule == "constant":
        assert (traced == 2e-3).all()
    else:
        peak = int(np.argmax(traced))
        assert traced[0] == pytest.approx(2e-3 / 25)
        assert traced[peak] == pytest.approx(2e-3)
        assert (np.diff(traced[: peak + 1]) > 0).all() and (np.diff(traced[peak:]) < 0).all()


def test_freeze_epochs_freeze_parameters_and_batchnorm_statistics(image_set, pretrained_file):
    record = _Record()
    est = small_estimator(
        image_set, weights=pretrained_file, max_epochs=2, callbacks=[("record", record)]
    ).fit(image_set, image_set[TARGETS])
    states = dict(est.net_.callbacks_)["record"].states_
    initial = torch.load(pretrained_file, weights_only=True)

    # "auto": pretrained, so one frozen epoch and the backbone at a tenth of the rate.
    assert est.history_[:, "backbone_lr"][0] == 0.0
    assert est.history_[1, "backbone_lr"] > 0
    frozen, trained = states
    for name, value in initial.items():
        assert torch.equal(frozen[name], value), name  # weights and BN running stats
    assert not torch.equal(trained["1.running_mean"], initial["1.running_mean"])
    assert not torch.equal(trained["0.weight"], initial["0.weight"])
    assert all(p.requires_grad for p in est.net_.module_.parameters())  # unfrozen at the end


def test_auto_recipe_resolves_from_the_weights(image_set, pretrained_file, fitted):
    scratch = fitted  # from scratch: weights=None
    tuned = small_estimator(image_set, weights=pretrained_file, max_epochs=2).fit(
        image_set, image_set[TARGETS]
    )
    optimizer = tuned.net_.optimizer_
    heads, backbone = optimizer.param_groups[0], optimizer.param_groups[1]

    assert scratch.history_[0, "backbone_lr"] > 0  # not frozen
    assert tuned.history_[1, "backbone_lr"] == pytest.approx(0.1 * tuned.history_[1, "lr"])
    assert backbone["max_lr"] == pytest.approx(0.1 * heads["max_lr"])


def test_default_weights_work_with_simple_cnn(image_set):
    est = MultiTaskImageEstimator(
        image_root=image_set.attrs["image_root"], backbone="simple_cnn", image_size=16,
        max_epochs=1, random_state=0,
    )
    est.fit(image_set, image_set[TARGETS])
    assert len(est.predict(image_set.head(3))) == 3


def test_default_weights_work_with_simple_cnn_in_the_cli(image_set, tmp_path, capsys):
    data = tmp_path / "data.csv"
    image_set.to_csv(data, index=False)
    code = cli_main([
        "fit", str(data), "--images", image_set.attrs["image_root"], "--targets", "color,area",
        "--backbone", "simple_cnn", "--image-size", "16", "--epochs", "1",
        "--model", str(tmp_path / "m.joblib"),
    ])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "m.joblib").exists()


def test_named_weights_for_simple_cnn_stay_an_error(image_set):
    est = small_estimator(image_set, weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match="names torchvision weights"):
        est.fit(image_set, image_set[TARGETS])
    assert not hasattr(est, "net_")


def test_early_stopping_restores_the_best_epoch(image_set):
    valid = image_set[image_set["is_valid"]]
    est = small_estimator(
        image_set, max_epochs=8, early_stopping=True, patience=2, monitor="valid_area_mae",
        lr=2e-2, lr_schedule="constant",
    ).fit(image_set, image_set[TARGETS])
    maes = est.history_[:, "valid_area_mae"]

    assert est.best_epoch_ == int(np.argmin(maes)) + 1
    labelled = valid["area"].notna()
    predicted = est.predict(valid)["area"][labelled]
    mae = (predicted - valid.loc[labelled, "area"]).abs().mean()
    assert mae == pytest.approx(min(maes), rel=1e-4)
    stopped = len(maes) < 8
    assert not stopped or len(maes) - est.best_epoch_ == 2  # stopped after `patience` misses


def test_early_stopping_watches_an_accuracy_upwards(image_set):
    est = small_estimator(
        image_set, max_epochs=3, early_stopping=True, monitor="valid_color_acc"
    ).fit(image_set, image_set[TARGETS])
    accuracies = est.history_[:, "valid_color_acc"]
    assert accuracies[est.best_epoch_ - 1] == max(accuracies)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(valid_split=None), "no validation data"),
        (dict(monitor="valid_age_mae"), "monitor='valid_age_mae' is not recorded"),
        (dict(monitor="valid_color_mae"), "is not recorded"),
    ],
)
def test_early_stopping_errors(image_set, params, message):
    est = small_estimator(image_set, early_stopping=True, **params)
    with pytest.raises(ValueError, match=message):
        est.fit(image_set, image_set[TARGETS])
    assert not hasattr(est, "net_")


def _state(est):
    return {k: v.clone() for k, v in est.net_.module_.state_dict().items()}


def test_lr_find_leaves_the_estimator_as_it_was(image_set, fitted_copy):
    y = image_set[TARGETS]
    unfitted = small_estimator(image_set)
    params = unfitted.get_params()
    history, suggested = unfitted.lr_find(image_set, y, num_it=15)

    assert list(history.columns) == ["lr", "loss", "smoothed_loss"]
    assert 2 <= len(history) <= 15
    assert history["lr"].iloc[0] == pytest.approx(1e-7)
    assert (np.diff(history["lr"]) > 0).all()
    assert history["lr"].min() <= suggested <= history["lr"].max()
    assert unfitted.get_params() == params
    assert not hasattr(unfitted, "net_")

    before, fitted_params = _state(fitted_copy), fitted_copy.get_params()
    fitted_copy.lr_find(image_set, y, num_it=10)
    assert fitted_copy.get_params() == fitted_params
    for name, value in _state(fitted_copy).items():
        assert torch.equal(value, before[name]), name


def test_lr_find_stops_when_the_loss_diverges(image_set):
    history, _ = small_estimator(image_set).lr_find(
        image_set, image_set[TARGETS], start_lr=1e-3, end_lr=1e6, num_it=60
    )
    smoothed = history["smoothed_loss"].to_numpy()
    assert len(history) < 60
    last = smoothed[-1]
    assert not np.isfinite(last) or last > 4 * np.nanmin(smoothed[:-1])


@pytest.mark.parametrize(
    "args, message",
    [
        (
            {"num_it": 1},
            r"The 'num_it' parameter of MultiTaskImageEstimator.lr_find must be an int in the "
            r"range \[2, inf\)",
        ),
        ({"start_lr": 0.0}, r"The 'start_lr' parameter .* must be a float in the range \(0"),
        ({"end_lr": float("nan")}, r"The 'end_lr' parameter .* Got nan instead"),
        ({"start_lr": 1.0, "end_lr": 0.1}, r"need start_lr < end_lr; got 1.0 and 0.1"),
    ],
)
def test_lr_find_refuses_bad_arguments_naming_them(image_set, args, message):
    with pytest.raises(ValueError, match=message):
        small_estimator(image_set).lr_find(image_set, image_set[TARGETS], **args)


def test_lr_find_refuses_a_bad_parameter_under_the_estimator_s_name(image_set):
    with pytest.raises(ValueError, match=r"The 'lr' parameter of MultiTaskImageEstimator must"):
        small_estimator(image_set, lr=-1.0).lr_find(image_set, image_set[TARGETS])


def test_warm_start_continues_the_network_and_history(image_set):
    y = image_set[TARGETS]
    est = small_estimator(image_set, max_epochs=2, warm_start=True).fit(image_set, y)
    first = _state(est)
    tasks = est.tasks_
    est.set_params(max_epochs=1).fit(image_set, y)

    assert len(est.history_) == 3
    assert est.history_[:, "epoch"] == [1, 2, 3]
    assert est.tasks_ is tasks
    cold = small_estimator(image_set, max_epochs=1).fit(image_set, y)
    # Continued from the fitted weights, not from a new initialisation.
    distance = sum((v.float() - first[k].float()).norm() for k, v in _state(est).items())
    fresh = sum((v.float() - first[k].float()).norm() for k, v in _state(cold).items())
    assert distance < fresh


def test_warm_start_with_other_tasks_is_an_error(image_set):
    est = small_estimator(image_set, max_epochs=1, warm_start=True).fit(
        image_set, image_set[TARGETS]
    )
    with pytest.raises(ValueError, match="warm_start continues a model of tasks"):
        est.fit(image_set, image_set[["color", "shape"]])
    assert len(est.history_) == 1  # the fitted model is untouched


def test_ctrl_c_keeps_the_completed_epochs_and_propagates(image_set):
    est = small_estimator(image_set, max_epochs=4, callbacks=[_Interrupt(epoch=3)])
    with pytest.raises(KeyboardInterrupt):
        est.fit(image_set, image_set[TARGETS])

    assert len(est.history_) == 2  # the interrupted third epoch is not in the history
    assert "valid_loss" in est.history_[-1]
    assert len(est.predict(image_set.head(4))) == 4


def test_skorchs_own_early_stopping_still_ends_the_fit_quietly(image_set):
    stop = EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)
    est = small_estimator(image_set, max_epochs=5, callbacks=[stop]).fit(
        image_set, image_set[TARGETS]
    )
    assert len(est.history_) == 2


def test_ctrl_c_in_the_first_epoch_leaves_nothing_fitted(image_set):
    est = small_estimator(image_set, callbacks=[_Interrupt(epoch=1)])
    with pytest.raises(KeyboardInterrupt):
        est.fit(image_set, image_set[TARGETS])
    assert not hasattr(est, "net_")


def test_ctrl_c_stops_a_cross_validation(image_set):
    est = small_estimator(image_set, max_epochs=2, valid_split=None, callbacks=[_Interrupt(2)])
    with pytest.raises(KeyboardInterrupt):
        cross_validate(est, image_set, image_set[TARGETS], cv=KFold(2))


def test_a_diverging_fit_stops_with_an_error(image_set):
    est = small_estimator(image_set, lr=1e6, lr_schedule="constant", max_epochs=3)
    with pytest.raises(FloatingPointError, match=r"training diverged\. Lower lr \(now 1e\+06\)"):
        est.fit(image_set, image_set[TARGETS])
    assert not hasattr(est, "net_")


_CHILD = """
import sys, time
import pandas as pd
import sk_multitask.training.callbacks as callbacks
from sk_multitask import MultiTaskImageEstimator

write = callbacks.RunState.on_epoch_end
def slow_write(self, net, **kwargs):  # time for the parent to kill mid-fit
    write(self, net, **kwargs)
    time.sleep(2)
callbacks.RunState.on_epoch_end = slow_write

import torch
torch.set_num_threads(int(sys.argv[3]))  # float sums depend on the thread count
df = pd.read_pickle(sys.argv[1])
est = MultiTaskImageEstimator(**pd.read_pickle(sys.argv[2]))
est.fit(df, df[["color", "shape", "area"]])
print("finished")
"""


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_model(image_set, tmp_path):
    params = small_estimator(
        image_set, max_epochs=4, checkpoint_dir=str(tmp_path / "ckpt"), augment=True
    ).get_params()
    image_set.to_pickle(tmp_path / "df.pkl")
    pd.to_pickle(params, tmp_path / "params.pkl")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))
    checkpoint = tmp_path / "ckpt" / "run.pt"
    child = subprocess.Popen(
        [
            sys.executable, str(script), str(tmp_path / "df.pkl"), str(tmp_path / "params.pkl"),
            str(torch.get_num_threads()),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= done < 4

    resumed = MultiTaskImageEstimator(**params).fit(image_set, image_set[TARGETS])
    params["checkpoint_dir"] = None
    straight = MultiTaskImageEstimator(**params).fit(image_set, image_set[TARGETS])

    assert resumed.history_[:, "epoch"] == [1, 2, 3, 4]
    np.testing.assert_array_equal(
        resumed.history_[:, "train_loss"], straight.history_[:, "train_loss"]
    )
    pd.testing.assert_frame_equal(resumed.predict(image_set), straight.predict(image_set))


def test_a_checkpoint_of_other_parameters_is_ignored_with_a_warning(image_set, tmp_path):
    y = image_set[TARGETS]
    small_estimator(image_set, max_epochs=1, checkpoint_dir=tmp_path).fit(image_set, y)
    other = small_estimator(image_set, max_epochs=2, lr=5e-3, checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="is of another run"):
        other.fit(image_set, y)
    assert len(other.history_) == 2
    # A finished run resumes to the end at once: nothing left to train.
    again = clone(other).fit(image_set, y)
    assert again.history_[:, "train_loss"] == other.history_[:, "train_loss"]


def test_an_unreadable_checkpoint_is_an_error(image_set, tmp_path):
    (tmp_path / "run.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "run.pt.123.tmp").write_bytes(b"half")  # a write cut short: ignored
    est = small_estimator(image_set, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="cannot read the checkpoint"):
        est.fit(image_set, image_set[TARGETS])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1e160, 2e160, 3e160], "cannot be standardised.*overflow float64"),
        ([1.0, np.inf, 2.0], "has infinite values"),
    ],
)
def test_regression_targets_that_cannot_train_are_refused(image_set, values, message):
    y = image_set[TARGETS].copy()
    y["area"] = np.resize(values, len(y))
    with pytest.raises(ValueError, match=f"target 'area' {message}"):
        small_estimator(image_set).fit(image_set, y)


def test_a_write_cut_short_leaves_the_previous_checkpoint(image_set, tmp_path):
    y = image_set[TARGETS]
    first = small_estimator(image_set, max_epochs=2, checkpoint_dir=tmp_path).fit(image_set, y)
    # What a kill while writing leaves: a partial temporary file beside the checkpoint.
    (tmp_path / "run.pt.4242.tmp").write_bytes(b"\x80\x02 half a checkpoint")
    (tmp_path / "params-3.safetensors.4242.tmp").write_bytes(b"half the weights")
    again = small_estimator(image_set, max_epochs=2, checkpoint_dir=tmp_path).fit(image_set, y)
    assert again.history_[:, "train_loss"] == first.history_[:, "train_loss"]


def test_the_checkpoint_is_skorchs_safetensors_files_and_run_pt(image_set, tmp_path):
    from safetensors.torch import load_file

    y = image_set[TARGETS]
    est = small_estimator(image_set, max_epochs=2, checkpoint_dir=tmp_path).fit(image_set, y)
    # Only the last epoch's files stay; no temporary file is left behind.
    names = ["criterion-2.safetensors", "history.json", "params-2.safetensors", "run.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    run = torch.load(tmp_path / "run.pt", weights_only=True)
    assert run["epoch"] == 2
    assert set(run) >= {"fingerprint", "optimizer", "torch_rng"}
    params = load_file(tmp_path / "params-2.safetensors")
    for key, value in est.net_.module_.state_dict().items():
        torch.testing.assert_close(params[key], value)
    # skorch's Checkpoint records no event: the history is that of a fit without one.
    assert "event_cp" not in est.history_[-1]


def test_a_kill_before_run_pt_resumes_from_the_last_committed_epoch(
    image_set, tmp_path, monkeypatch
):
    from sk_multitask.training.callbacks import RunState

    y = image_set[TARGETS]
    write = RunState.on_epoch_end

    def killed_at_epoch_2(self, net, **kwargs):
        if len(net.history) == 2:  # epoch 2's skorch files are written, run.pt is not
            raise RuntimeError("killed")
        write(self, net, **kwargs)

    monkeypatch.setattr(RunState, "on_epoch_end", killed_at_epoch_2)
    with pytest.raises(RuntimeError, match="killed"):
        small_estimator(image_set, max_epochs=3, checkpoint_dir=tmp_path).fit(image_set, y)
    monkeypatch.setattr(RunState, "on_epoch_end", write)
    assert (tmp_path / "params-2.safetensors").exists()
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2
    assert torch.load(tmp_path / "run.pt", weights_only=True)["epoch"] == 1

    resumed = small_estimator(image_set, max_epochs=3, checkpoint_dir=tmp_path).fit(image_set, y)
    straight = small_estimator(image_set, max_epochs=3).fit(image_set, y)
    assert resumed.history_[:, "epoch"] == [1, 2, 3]
    np.testing.assert_array_equal(
        resumed.history_[:, "train_loss"], straight.history_[:, "train_loss"]
    )
    pd.testing.assert_frame_equal(resumed.predict(image_set), straight.predict(image_set))
