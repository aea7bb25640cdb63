import jax
import pytest

from vnca.profile import by_profile, current_profile


@pytest.mark.parametrize("backend, expected", [("cpu", "smoke"), ("gpu", "full"), ("tpu", "full")])
def test_default_follows_the_backend(monkeypatch, backend, expected):
    monkeypatch.delenv("VNCA_PROFILE", raising=False)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert current_profile() == expected


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
