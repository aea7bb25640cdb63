from pathlib import Path

import jax
import pytest

from vnca.profile import by_profile, current_profile, runs_folder


@pytest.mark.parametrize("backend", ["cpu", "gpu", "tpu"])
def test_default_is_smoke_on_every_machine(monkeypatch, backend):
    monkeypatch.delenv("VNCA_PROFILE", raising=False)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert current_profile() == "smoke"


@pytest.mark.parametrize("value, expected", [("smoke", "smoke"), ("full", "full"), (" FULL ", "full")])
def test_environment_variable_chooses(monkeypatch, value, expected):
    monkeypatch.setenv("VNCA_PROFILE", value)
    assert current_profile() == expected
    assert by_profile(smoke=1, full=2) == (1 if expected == "smoke" else 2)


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("VNCA_PROFILE", "huge")
    with pytest.raises(ValueError, match="VNCA_PROFILE is 'huge'; expected one of: smoke, full"):
        current_profile()
    with pytest.raises(ValueError, match="unknown profile"):
        by_profile(smoke=1, full=2, profile="tiny")


def test_full_runs_go_where_they_outlive_the_session(monkeypatch, tmp_path):
    monkeypatch.delenv("VNCA_RUNS", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert runs_folder(tmp_path) == Path("runs")  # a plain machine: the current folder
    (tmp_path / "content").mkdir()
    assert runs_folder(tmp_path) == Path("runs")  # a folder called content is not Colab
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20261101")
    assert runs_folder(tmp_path) == tmp_path / "content/runs"
    (tmp_path / "content/drive/MyDrive").mkdir(parents=True)  # Google Drive mounted
    assert runs_folder(tmp_path) == tmp_path / "content/drive/MyDrive/vnca-runs"
    (tmp_path / "kaggle/working").mkdir(parents=True)
    assert runs_folder(tmp_path) == tmp_path / "kaggle/working/runs"
    monkeypatch.setenv("VNCA_RUNS", str(tmp_path / "mine"))
    assert runs_folder(tmp_path) == tmp_path / "mine"


@pytest.mark.parametrize("model, tpu, v5e8, v5e1, t4x2, t4", [
    ("baseline", "10 min", "3.1 min", "25 min", "6.9 min", "14 min"),
    ("doubling", "40 min", "12 min", "1.7 h", "10 h", "21 h"),
    ("nondoubling", "2.5 h", "47 min", "6.2 h", "26 h", "2.2 days")])
def test_a_full_run_is_announced_with_its_cost_and_its_folder(model, tpu, v5e8, v5e1, t4x2, t4, tmp_path):
    from vnca.recipes import full_run_notice, train_config

    config = train_config(model, "full")
    notice = full_run_notice(config, tmp_path / "run")
    assert notice.startswith(f"VNCA_PROFILE=full: 100,000 steps of batch {config.batch_size}.")
    assert f"about {tpu} on a TPU v3-8 (measured by the JAX reproduction); estimated: {v5e8} on a Kaggle " \
           f"TPU v5e-8, {v5e1} on a Colab TPU v5e-1, {t4x2} on a Kaggle T4 x2, {t4} on a Colab T4." in notice
    assert f"every 2,000 steps in {tmp_path / 'run'}; run again to resume" in notice
    # the chapters that start full runs print it
    for chapter in ("train", "pool"):
        assert "print(full_run_notice(config, run_dir))" in (Path(__file__).parent.parent / "book" /
                                                            f"{chapter}.md").read_text()
