import pytest

from worker.config import load_config, parse_cpus
from worker.errors import ConfigError


def test_shipped_config_loads():
    config = load_config("configs/worker.yaml", env={})
    assert config.precision == "f32" and config.batch == "auto"


def test_env_overrides_file_and_flags_override_env(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("threads: 2\nbatch: '1'\n")
    config = load_config(path, env={"DEER_WORKER_THREADS": "3", "DEER_WORKER_LATEST_ONLY": "yes",
                                    "DEER_WORKER_SNAPSHOT_DIRS": "/a:/b"}, overrides={"batch": "4"})
    assert config.threads == 3 and config.latest_only is True and config.batch == "4"
    assert config.snapshot_dirs == ["/a", "/b"]


@pytest.mark.parametrize("text, key", [("batch: 8\n", "batch"), ("thread: 2\n", "thread"), ("max_age: -1\n", "max_age"),
                                       ("redis_url: http://x\n", "redis_url"), ("threads: many\n", "threads"),
                                       ("cpus: 'a-b'\n", "cpus"), ("precision: fp8\n", "precision")])
def test_bad_values_name_the_key(tmp_path, text, key):
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{key}:"):
        load_config(path, env={})


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="DEER_WORKER_WORKERS"):
        load_config(None, env={"DEER_WORKER_WORKERS": "two"})


def test_parse_cpus():
    assert parse_cpus("0,2-3") == [0, 2, 3] and parse_cpus("") == []
