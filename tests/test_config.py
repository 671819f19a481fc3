import pytest

from steadytext_async import InvalidRequestError, Settings


def test_env_parsing() -> None:
    s = Settings.from_env(
        {
            "STEADYTEXT_WORKERS": "3",
            "STEADYTEXT_THREADS": "4",
            "STEADYTEXT_STRICT": "true",
            "STEADYTEXT_N_CTX": "2048",
            "STEADYTEXT_MODEL_DIR": "/tmp/x",
        }
    )
    assert (s.workers, s.threads, s.strict, s.n_ctx, str(s.model_dir)) == (3, 4, True, 2048, "/tmp/x")


def test_overrides_win_over_env() -> None:
    assert Settings.from_env({"STEADYTEXT_WORKERS": "3"}, workers=1).workers == 1


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"STEADYTEXT_WORKERS": "two"}, "not an integer"),
        ({"STEADYTEXT_THREADS": "0"}, "must be >= 1"),
        ({"STEADYTEXT_STRICT": "maybe"}, "not a boolean"),
    ],
)
def test_bad_env_is_a_clear_error(env: dict, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        Settings.from_env(env)


def test_spare_workers_from_env_and_checked() -> None:
    assert Settings.from_env({"STEADYTEXT_SPARE_WORKERS": "1"}).spare_workers == 1
    assert Settings.from_env({}).spare_workers == 0
    for bad in (2, -1, True):
        with pytest.raises(InvalidRequestError, match="spare_workers"):
            Settings(spare_workers=bad)
