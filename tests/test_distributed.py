"""Training on several processes: a search on Dask workers, data-parallel on Accelerate."""

import json
import os
import shutil
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from conftest import TARGETS, small_estimator
from sklearn.model_selection import GridSearchCV, KFold

from sk_multitask.training._distributed import dask_worker_threads, is_main_process, uses_accelerate


def _threads_in_fit():
    torch.set_num_threads(2)  # as if torch was imported before the worker's settings
    with dask_worker_threads():
        return torch.get_num_threads()


def with_table(df):
    """``df`` with two table columns, a number and a category (one cell of each missing)."""
    rng = np.random.default_rng(0)
    df = df.assign(z=rng.normal(size=len(df)), group=rng.choice(["a", "b", "c"], len(df)))
    df.loc[df.index[0], "z"] = np.nan
    df.loc[df.index[1], "group"] = None
    return df


@pytest.mark.slow
@pytest.mark.parametrize("table", [False, True], ids=["images", "images+table"])
def test_grid_search_on_dask_matches_sequential(image_set, table):
    from dask.distributed import Client, LocalCluster

    data = with_table(image_set.iloc[:64]) if table else image_set.iloc[:64]
    y = data[TARGETS]
    est = small_estimator(data, max_epochs=1, valid_split=None,
                          tabular_cols=["z", "group"] if table else None)
    grid = {"lr": [1e-3, 3e-3]}
    sequential = GridSearchCV(est, grid, cv=KFold(2), refit=False).fit(data, y)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        # Each worker trains on one core, whatever torch's count when it was imported.
        workers = list(client.scheduler_info()["workers"])
        threads = [client.submit(_threads_in_fit, pure=False, workers=[w]) for w in workers]
        assert client.gather(threads) == [1, 1]
        with joblib.parallel_backend("dask"):
            on_dask = GridSearchCV(est, grid, cv=KFold(2), refit=False, n_jobs=-1).fit(data, y)
    # Equal up to float noise: the workers' torch runs 1 thread, this process's more.
    for key in ("split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(on_dask.cv_results_[key], sequential.cv_results_[key],
                                   atol=1e-3)


def test_dask_worker_threads_outside_a_worker_change_nothing():
    before = torch.get_num_threads()
    with dask_worker_threads():
        assert torch.get_num_threads() == before


def test_not_launched_means_one_process(monkeypatch):
    assert is_main_process() and not uses_accelerate("auto")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert uses_accelerate("auto") and not uses_accelerate(None) and not is_main_process()


def launch_on_two_processes(*args):
    """``accelerate launch`` of ``args`` (a script and its arguments, or ``-m`` and a module)
    on two CPU processes; the finished ``subprocess.CompletedProcess``."""
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    # --multi_gpu: several processes; without GPUs they train on CPUs with gloo.
    command = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("table", [False, True], ids=["images", "images+table"])
def test_cli_fit_data_parallel_on_two_processes(image_set, tmp_path, table):
    """`accelerate launch --multi_gpu --num_processes 2 sk-multitask fit` on CPUs: one model
    (with table columns too: the batches are then dicts of images and table)."""
    data = tmp_path / "train.csv"
    if table:
        image_set = with_table(image_set)  # keeps its attrs (image_root)
    image_set.to_csv(data, index=False)
    model = tmp_path / "model.joblib"
    run = launch_on_two_processes(
        "-m", "sk_multitask.cli", "fit", data,
        "--images", image_set.attrs["image_root"], "--targets", ",".join(TARGETS),
        "--model", model, "--backbone", "simple_cnn", "--weights", "none",
        "--image-size", "16", "--epochs", "3", "--batch-size", "32",
        "--valid-col", "is_valid", "--seed", "0",
        *(["--tabular", "z,group"] if table else []),
    )  # fmt: skip
    assert run.stdout.count("model saved to") == 1  # only the main process writes

    est = joblib.load(model)
    assert type(est.net_).__name__ == "MultiTaskNet"  # no Accelerator, no DDP wrapper
    # Each process trained on its half of every batch of 32.
    batches = est.history_[-1, "batches"]
    assert {b["train_batch_size"] for b in batches if "train_batch_size" in b} == {16}
    valid = image_set["is_valid"].to_numpy()
    distributed = est.score(image_set[valid], image_set[TARGETS][valid])

    assert est.tabular_cols == (["z", "group"] if table else None)
    single = small_estimator(image_set, max_epochs=3, tabular_cols=est.tabular_cols)
    single.fit(image_set, image_set[TARGETS])
    alone = single.score(image_set[valid], image_set[TARGETS][valid])
    assert abs(distributed - alone) < 0.15, (distributed, alone)
    # Metrics gathered from both processes: near those of the whole validation set (not
    # equal: the second process validates with its own BatchNorm running statistics, and
    # Accelerate pads the last batch by repeating rows).
    accuracy = est.evaluate(image_set[valid], image_set[TARGETS][valid]).loc["color", "accuracy"]
    assert est.history_[-1, "valid_color_acc"] == pytest.approx(accuracy, abs=0.1)


#: Fits with learned task weights in each launched process, and writes them to a file
#: of its own: the data file, the image folder and the output folder are its arguments.
UNCERTAINTY_FIT = """
import json, os, sys

import pandas as pd

from sk_multitask import MultiTaskImageEstimator

data, images, out = sys.argv[1:]
data = pd.read_csv(data)
est = MultiTaskImageEstimator(
    image_root=images, backbone="simple_cnn", weights=None, image_size=16, max_epochs=2,
    batch_size=16, valid_split=None, loss_weights="uncertainty", random_state=0,
).fit(data, data[["color", "shape", "area"]])
with open(os.path.join(out, f"weights-{os.environ['RANK']}.json"), "w") as f:
    json.dump(est.net_.criterion_.weights.tolist(), f)
"""


@pytest.mark.slow
def test_learned_task_weights_are_the_same_in_every_process(image_set, tmp_path):
    """loss_weights="uncertainty" on two processes: the learned log-variances' gradients
    are averaged as the network's are, so both processes end with the same task weights."""
    data, script = tmp_path / "train.csv", tmp_path / "fit.py"
    image_set.iloc[:64].to_csv(data, index=False)
    script.write_text(UNCERTAINTY_FIT)
    launch_on_two_processes(script, data, image_set.attrs["image_root"], tmp_path)
    first, second = (json.loads((tmp_path / f"weights-{r}.json").read_text()) for r in (0, 1))
    assert first != [1.0, 1.0, 1.0]  # learned: 8 steps moved them from exp(-0)
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)
