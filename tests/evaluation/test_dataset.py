"""worker.evaluation.dataset: data yamls (paths from any cwd, names, splits) and YOLO label files."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import DEMO, write_dataset
from worker.errors import ConfigError
from worker.evaluation.dataset import label_path, labels_to_truth, list_images, load_data_yaml, load_truth, read_labels

HELDOUT_YAML = DEMO / "heldout.yaml"


def test_yaml_paths_are_relative_to_the_yaml_directory(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    data = load_data_yaml(write_dataset(tmp_path, "path: ds\nval: images/val\nnames: {0: deer}\n"))
    assert data.names == ("deer",) and data.root == tmp_path / "ds"
    assert data.images("val") == [tmp_path / "ds" / "images" / "val" / "a.jpg"]
    with pytest.raises(ConfigError, match="no 'test' split"):
        data.images("test")


def test_yaml_without_path_uses_its_directory_and_list_names(tmp_path):
    (tmp_path / "ds").mkdir()
    data = load_data_yaml(write_dataset(tmp_path, "val: ds/images/val\nnames: [deer, fox]\n"))
    assert data.root == tmp_path and data.names == ("deer", "fox")
    assert len(data.images("val")) == 1


def test_heldout_yaml_works_from_any_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    data = load_data_yaml(HELDOUT_YAML)
    assert data.names == ("deer",)
    images = data.images("val")
    assert len(images) == 50 and all(p.is_relative_to(DEMO / "heldout" / "images") for p in images)


def test_cwd_or_repo_root_relative_path_is_found(monkeypatch, tmp_path):
    """ultralytics resolves a relative `path` against the cwd; such yamls work here from anywhere."""
    path = tmp_path / "d.yaml"
    path.write_text("path: models/demo/heldout\nval: images\nnames: [deer]\n")
    monkeypatch.chdir(tmp_path)
    assert load_data_yaml(path).root == DEMO / "heldout"  # not next to the yaml, not in the cwd


@pytest.mark.parametrize("text, message", [
    ("val: x\n", "names"),
    ("val: x\nnc: 2\nnames: [deer]\n", "nc: 2 but 1 names"),
    ("path: nowhere\nval: x\nnames: [deer]\n", "not found"),
    ("- a\n", "expected a mapping"),
])
def test_bad_yaml_is_named(tmp_path, text, message):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_data_yaml(path)


def test_nc_only_yaml(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("val: x\nnc: 2\n")
    assert load_data_yaml(path).names == ("class_0", "class_1")


# --- YOLO label files -------------------------------------------------------------------------------
def test_label_files_to_pixel_boxes(tmp_path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "labels" / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.png", "sub/c.jpeg", "notes.txt"):
        (tmp_path / "images" / name).write_bytes(b"x")
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.25\n1 0.25 0.25 0.1 0.1\n1 0.25 0.25 0.1 0.1\n")
    images = list_images(tmp_path / "images")
    assert [p.name for p in images] == ["a.png", "b.jpg", "c.jpeg"]
    assert label_path(images[0]) == tmp_path / "labels" / "a.txt"
    assert label_path(images[2]) == tmp_path / "labels" / "sub" / "c.txt"
    rows = read_labels(label_path(images[0]), num_classes=2)
    assert len(rows) == 2  # the exact duplicate is dropped, as ultralytics does
    t = load_truth(images[0], 200, 100, num_classes=2)
    by_class = {int(c): b.tolist() for c, b in zip(t.classes, t.boxes)}
    assert by_class[0] == pytest.approx([50, 37.5, 150, 62.5])
    assert by_class[1] == pytest.approx([40, 20, 60, 30])
    assert len(load_truth(images[1], 10, 10)) == 0  # no label file = no boxes
    assert len(labels_to_truth(np.zeros((0, 5), np.float32), 10, 10)) == 0


def test_image_list_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.jpg").write_bytes(b"x")
    (tmp_path / "val.txt").write_text("./images/x.jpg\n")
    assert list_images(tmp_path / "val.txt") == [tmp_path / "images" / "x.jpg"]


@pytest.mark.parametrize("content, message", [
    ("0 0.5 0.5 0.2\n", "5 columns"),
    ("0 0.5 0.5 1.5 0.2\n", "normalised"),
    ("0.5 0.5 0.5 0.2 0.2\n", "integers"),
    ("3 0.5 0.5 0.2 0.2\n", "out of range"),
    ("deer 0.5 0.5 0.2 0.2\n", "not a YOLO label file"),
])
def test_bad_label_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        read_labels(path, num_classes=1)
    assert str(path) in str(info.value)


def test_missing_image_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        list_images(tmp_path / "empty")
