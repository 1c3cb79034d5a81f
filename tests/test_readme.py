"""The README's Python example runs as written, on a stand-in for UTKFace.

The stand-in is real: small synthetic JPEG files named as UTKFace names its images, in
``data/UTKFace`` of a temporary working folder, read by the real ``load_utkface``. Only
the estimator's size settings are made small (the small CNN, 16 px, one epoch), since
resnet18's pretrained weights would be downloaded and UTKFace's 200 px images trained on.
"""

import os
import re
from pathlib import Path

import numpy as np

from sk_multitask import load
from sk_multitask.datasets import make_multitask_images

README = Path(__file__).parents[1] / "README.md"
SMALL = 'backbone="simple_cnn", weights=None, image_size=16, max_epochs=1, batch_size=16, '


def _utkface_stand_in(folder, n=48):
    """``n`` synthetic images named ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg``."""
    folder.mkdir(parents=True)
    df = make_multitask_images(n, image_size=16, path=folder, random_state=0)
    rng = np.random.default_rng(0)
    for i, name in enumerate(df["filename"]):
        age, gender, race = rng.integers(1, 99), i % 2, i % 5
        os.rename(folder / name, folder / f"{age}_{gender}_{race}_2017011{i:06d}.jpg.chip.jpg")


def test_readme_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    assert "KFold(3, shuffle=True, random_state=0)" in code  # folds not sorted by age
    assert code.count("MultiTaskImageEstimator(image_col") == 1
    monkeypatch.chdir(tmp_path)
    _utkface_stand_in(tmp_path / "data" / "UTKFace")

    namespace = {}
    exec(
        compile(
            code.replace(
                "MultiTaskImageEstimator(image_col", f"MultiTaskImageEstimator({SMALL}image_col"
            ),
            str(README),
            "exec",
        ),
        namespace,
    )  # noqa: S102

    search = namespace["search"]
    assert search.cv.shuffle
    assert set(search.cv_results_) >= {"mean_test_age", "mean_test_gender", "mean_test_mean"}
    assert load(tmp_path / "model.skmt").tasks_.keys() == {"age", "gender", "ethnicity"}
    assert not list(tmp_path.glob(".sk_multitask-*"))  # no temporary file left
    assert namespace["est"].predict(namespace["df"]).shape == (48, 3)


def test_make_test_installs_the_tracking_extra():
    import tomllib

    project = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]
    assert any("[tracking]" in r for r in project["optional-dependencies"]["test"])
    # With the constraints of the suite's last passing run (pip -c), where there are any.
    assert 'pip install $(PIN) -e ".[test]"' in (README.parent / "Makefile").read_text()
