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
def test_bad_env_is_a_clear_error(env: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        Settings.from_env(env)


def test_none_override_unsets_what_the_environment_set() -> None:
    """Regression: ``from_env`` dropped ``None`` overrides, so ``daemon_url=None`` could not undo the variable."""
    env = {
        "STEADYTEXT_DAEMON_URL": "http://127.0.0.1:9",
        "STEADYTEXT_CACHE_URL": "redis://127.0.0.1:9/0",
        "STEADYTEXT_MODEL_PATH": "/tmp/model.gguf",
    }
    kept = Settings.from_env(env)
    assert (kept.daemon_url, kept.cache_url, kept.model_path) == tuple(env.values())
    unset = Settings.from_env(env, daemon_url=None, cache_url=None, model_path=None)
    assert (unset.daemon_url, unset.cache_url, unset.model_path) == (None, None, None)
    with pytest.raises(InvalidRequestError, match="workers must be a positive int, got None"):
        Settings.from_env(env, workers=None)  # None is a choice, checked like any other value


def test_client_keyword_none_unsets_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    from steadytext_async import AsyncSteadyText

    monkeypatch.setenv("STEADYTEXT_DAEMON_URL", "http://127.0.0.1:9")
    assert AsyncSteadyText().settings.daemon_url == "http://127.0.0.1:9"
    assert AsyncSteadyText(daemon_url=None).settings.daemon_url is None


def test_daemon_url_scheme_is_checked() -> None:
    """Regression: the check sat after a ``return`` in another property and never ran."""
    with pytest.raises(InvalidRequestError, match="daemon_url must start with"):
        Settings(daemon_url="127.0.0.1:8000")
    assert Settings(daemon_url="unix:///tmp/engine.sock").daemon_url == "unix:///tmp/engine.sock"


def test_dispatch_from_env_and_checked() -> None:
    assert Settings.from_env({}).dispatch == "spread" == Settings().dispatch
    assert Settings.from_env({"STEADYTEXT_DISPATCH": " Batch "}).dispatch == "batch"
    for bad in ("", "round-robin", "BATCH", 1):
        with pytest.raises(InvalidRequestError, match="dispatch"):
            Settings(dispatch=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="dispatch"):
        Settings.from_env({"STEADYTEXT_DISPATCH": "fastest"})


def test_spare_workers_from_env_and_checked() -> None:
    assert Settings.from_env({"STEADYTEXT_SPARE_WORKERS": "1"}).spare_workers == 1
    assert Settings.from_env({}).spare_workers == 0
    for bad in (2, -1, True):
        with pytest.raises(InvalidRequestError, match="spare_workers"):
            Settings(spare_workers=bad)
