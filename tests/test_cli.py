import json
import subprocess
import sys

import pytest

from conftest import FP32_MODEL, ROOT, SAMPLES


def _cli(*args, check=True):
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=ROOT, capture_output=True, text=True,
                          check=check, timeout=300)


def test_detect_json_and_annotated_output(tmp_path):
    images = [str(SAMPLES / "day_1920x1080_deer.jpg"), str(SAMPLES / "night_640x360_empty.jpg")]
    out = _cli("detect", *images, "--model", str(FP32_MODEL), "--conf", "0.25", "--json", "--save-dir", str(tmp_path))
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [len(line["detections"]) >= 1 for line in lines] == [True, False]
    assert set(lines[0]["timings_ms"]) == {"decode", "preprocess", "infer", "postprocess", "total"}
    assert lines[0]["precision"] == "f32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day_1920x1080_deer.jpg", "night_640x360_empty.jpg"]


def test_detect_human_output_and_bad_file_exit_status(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = _cli("detect", str(SAMPLES / "night_640x360_deer.jpg"), str(bad), "--model", str(FP32_MODEL), "--conf", "0.25",
               check=False)
    assert out.returncode == 1
    assert "deer" in out.stdout and "decode" in out.stdout and "ERROR corrupt_image" in out.stdout


def test_bad_config_is_one_clear_error(tmp_path):
    config = tmp_path / "w.yaml"
    config.write_text("batch: 9\n")
    out = _cli("detect", str(SAMPLES / "day_640x360_deer.jpg"), "--config", str(config), check=False)
    assert out.returncode == 2 and "batch" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("embedded", ["redis-server", "fakeredis"])
def test_demo_runs_end_to_end_without_a_redis_server(embedded):
    out = _cli("demo", "--model", str(FP32_MODEL), "--embedded", embedded)
    assert "all ok" in out.stdout and "p50 ms" in out.stdout
    assert out.stdout.count(" ok ") >= len(list(SAMPLES.iterdir()))


def test_enqueue_puts_json_jobs_on_the_queue_and_refuses_bad_files(redis_conn, tmp_path):
    from rq import Queue

    from conftest import TEST_REDIS_URL
    from worker.jobqueue.connections import SERIALIZER

    out = _cli("enqueue", str(SAMPLES / "day_640x360_deer.jpg"), str(SAMPLES / "night_640x360_deer.jpg"),
               "--camera", "10cea9e4511f", "--redis", TEST_REDIS_URL, "--queue", "cli-q")
    assert out.stdout.count("enqueued job") == 2
    queue = Queue("cli-q", connection=redis_conn, serializer=SERIALIZER)
    assert queue.count == 2 and queue.jobs[0].args[0]["camera_id"] == "10cea9e4511f"
    bad = tmp_path / "x.gif"
    bad.write_bytes(b"GIF89a....")
    out = _cli("enqueue", str(bad), "--camera", "cam1", "--redis", TEST_REDIS_URL, "--queue", "cli-q", check=False)
    assert out.returncode == 2 and "unsupported_format" in out.stderr and queue.count == 2
