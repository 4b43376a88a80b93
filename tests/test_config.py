import os
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from worker.config import ENV_PREFIX, WorkerConfig, load_config, parse_cpus
from worker.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


SHIPPED = ROOT / "configs" / "worker.yaml"
# A wrong-typed value per setting type; str settings take any scalar and are checked by validate().
WRONG = {bool: "maybe", int: 2.5, float: True, list: 5}


def test_shipped_config_loads_and_names_every_setting():
    """The shipped worker.yaml is the settings' documentation: every WorkerConfig setting is in it,
    and it loads (an unknown key there would be refused)."""
    raw = yaml.safe_load(SHIPPED.read_text())
    assert set(raw) == {f.name for f in fields(WorkerConfig)}
    config = load_config(SHIPPED, env={})
    for key, value in raw.items():  # each value reaches the config as written (types coerced)
        assert getattr(config, key) == (value if value is not None else getattr(WorkerConfig(), key)), key


@pytest.mark.parametrize("field", [f for f in fields(WorkerConfig) if not isinstance(getattr(WorkerConfig(), f.name), str)],
                         ids=lambda f: f.name)
def test_every_typed_setting_refuses_a_wrong_type_by_name(tmp_path, field):
    wrong = WRONG[type(getattr(WorkerConfig(), field.name))]
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump({field.name: wrong}))
    with pytest.raises(ConfigError, match=f"{field.name}:"):
        load_config(path, env={})
    if type(getattr(WorkerConfig(), field.name)) is not list:  # from the environment a list is any string
        with pytest.raises(ConfigError, match=ENV_PREFIX + field.name.upper()):
            load_config(None, env={ENV_PREFIX + field.name.upper(): str(wrong)})


# A valid value other than the default, for the str settings validate() restricts.
OTHER = {"batch": "4", "precision": "bf16", "cpus": "0", "redis_url": "redis://127.0.0.1:6379/1",
         "shapes": ["21x9", "1x1"], "iou": 0.5}


def _other_value(name: str, default):
    if name in OTHER:
        return OTHER[name]
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default + 1 if isinstance(default, int) else default / 2
    return ["/a", "/b"] if isinstance(default, list) else default + "x"


@pytest.mark.parametrize("field", fields(WorkerConfig), ids=lambda f: f.name)
def test_every_setting_has_an_environment_override(field):
    """DEER_WORKER_<KEY> reaches every setting: a value other than the default, given as a string, is taken."""
    value = _other_value(field.name, getattr(WorkerConfig(), field.name))
    assert value != getattr(WorkerConfig(), field.name)
    text = os.pathsep.join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else str(value)
    config = load_config(None, env={ENV_PREFIX + field.name.upper(): text})
    assert getattr(config, field.name) == value


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


def test_shapes_take_sizes_or_ratios_and_a_comma_separated_environment_value(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("shapes: [1920x1080, '4:3']\n")
    assert load_config(path, env={}).shapes == ["1920x1080", "4:3"]
    assert load_config(None, env={"DEER_WORKER_SHAPES": "16x9,1x1"}).shapes == ["16x9", "1x1"]


@pytest.mark.parametrize("text", ["shapes: [16x]\n", "shapes: [0x9]\n", "shapes: [969]\n"])
def test_a_bad_shape_is_named(tmp_path, text):
    """969 is what YAML makes of an unquoted 16:9 (base 60)."""
    path = tmp_path / "w.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="shapes: expected WIDTHxHEIGHT"):
        load_config(path, env={})
