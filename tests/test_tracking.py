"""Logging to TensorBoard and MLflow through skorch's callbacks in ``callbacks=[...]``.

Offline and fast: TensorBoard event files and an MLflow file store in ``tmp_path``. The
``tracking`` extra installs both; without them these tests are skipped.
"""

import pytest
from conftest import TARGETS, small_estimator


def test_tensorboard_receives_every_task_metric(image_set, tmp_path):
    pytest.importorskip("tensorboard")
    from skorch.callbacks import TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    est = small_estimator(image_set, callbacks=[TensorBoard(writer)])
    est.fit(image_set, image_set[TARGETS])

    events = EventAccumulator(str(tmp_path)).Reload()
    for key in ("valid_loss", "valid_color_acc", "train_shape_loss", "valid_area_mae"):
        logged = [event.value for event in events.Scalars(f"Loss/{key}")]
        assert logged == pytest.approx(est.history_[:, key], rel=1e-6), key


def test_mlflow_receives_every_task_metric(image_set, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from skorch.callbacks import MlflowLogger

    # A local file store: offline, and no database to create (MLflow 3 asks for the opt-in).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=tmp_path.as_uri())
    run = client.create_run(client.create_experiment("sk-multitask"))
    logger = MlflowLogger(run, client, create_artifact=False)
    est = small_estimator(image_set, callbacks=[logger])
    est.fit(image_set, image_set[TARGETS])

    for key in ("valid_loss", "valid_color_acc", "train_shape_loss", "valid_area_rmse"):
        logged = [m.value for m in client.get_metric_history(run.info.run_id, key)]
        assert logged == pytest.approx(est.history_[:, key], rel=1e-6), key
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
