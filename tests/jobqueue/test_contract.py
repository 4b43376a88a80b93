import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import PayloadError, PayloadTooLargeError, SnapshotFileError, SnapshotMissingError
from worker.jobqueue.contract import parse_payload, snapshot_bytes


def _payload(**kw):
    payload = {"v": 1, "camera_id": "10cea9e4511f", "captured_at": 1764201600.25,
               "snapshot": {"b64": base64.b64encode(b"\xff\xd8\xff").decode()}}
    payload.update(kw)
    return payload


def test_valid_payload_parses():
    job = parse_payload(_payload(job_id="abc-1", captured_at="2026-11-27T00:00:00Z"))
    assert job.camera_id == "10cea9e4511f" and job.job_id == "abc-1" and job.captured_at == 1795737600.0
    assert snapshot_bytes(job) == b"\xff\xd8\xff"


@pytest.mark.parametrize("payload, match", [
    ("not a dict", "JSON object"),
    (_payload(v=3), "version"),
    (_payload(camera_id="../../etc"), "camera_id"),
    (_payload(camera_id=5), "camera_id"),
    (_payload(extra=1), "unknown keys"),
    (_payload(snapshot={"b64": "x", "path": "/y"}), "snapshot"),
    (_payload(snapshot="abc"), "snapshot"),
    (_payload(captured_at="yesterday"), "captured_at"),
    (_payload(captured_at="2026-11-27T00:00:00"), "timezone"),
    (_payload(captured_at=True), "captured_at"),
    (_payload(captured_at=float("nan")), "captured_at"),
    (_payload(job_id="a:b"), "job_id"),
    (_payload(snapshot={"path": ""}), "snapshot.path"),
    (_payload(snapshot={"b64": 12}), "snapshot.b64"),
])
def test_contract_violations_name_the_field(payload, match):
    with pytest.raises(PayloadError, match=match):
        parse_payload(payload)


def test_key_snapshots_are_confined_to_the_prefix_and_fetched():
    job = parse_payload(_payload(snapshot={"key": "deer:snap:abc123"}))
    assert snapshot_bytes(job, fetch_key={"deer:snap:abc123": b"jpeg"}.get) == b"jpeg"
    with pytest.raises(SnapshotMissingError, match="does not exist"):
        snapshot_bytes(job, fetch_key={}.get)
    for key in ("rq:job:x", "deer:snap:", "deer:snap:a b", "deer:results", 5):
        with pytest.raises(PayloadError, match="snapshot.key"):
            parse_payload(_payload(snapshot={"key": key}))


def test_oversized_base64_refused_before_decoding():
    big = "A" * (4 * 1024 + 100)
    with pytest.raises(PayloadTooLargeError):
        parse_payload(_payload(snapshot={"b64": big}), max_snapshot_bytes=3 * 1024)


def test_invalid_base64():
    job = parse_payload(_payload(snapshot={"b64": "!!!notbase64"}))
    with pytest.raises(PayloadError, match="base64"):
        snapshot_bytes(job)


def test_file_snapshots_are_confined(tmp_path):
    allowed = tmp_path / "snaps"
    allowed.mkdir()
    (allowed / "a.jpg").write_bytes(b"jpeg")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x")
    os.symlink(secret, allowed / "link.jpg")
    ok = parse_payload(_payload(snapshot={"path": str(allowed / "a.jpg")}))
    assert snapshot_bytes(ok, snapshot_dirs=[str(allowed)]) == b"jpeg"
    for path in (str(allowed / ".." / "secret.txt"), str(allowed / "link.jpg"), "/etc/passwd"):
        with pytest.raises(SnapshotFileError, match="outside"):
            snapshot_bytes(parse_payload(_payload(snapshot={"path": path})), snapshot_dirs=[str(allowed)])
    with pytest.raises(SnapshotFileError, match="does not exist"):
        snapshot_bytes(parse_payload(_payload(snapshot={"path": str(allowed / "nope.jpg")})),
                       snapshot_dirs=[str(allowed)])
    with pytest.raises(SnapshotFileError, match="accepts no file"):
        snapshot_bytes(ok, snapshot_dirs=[])


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                                              children, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "camera_id", "captured_at", "snapshot", "job_id", "model", "x"]),
                       json_values, max_size=7))
def test_parser_only_ever_raises_payload_errors(payload):
    try:
        job = parse_payload(payload)
    except PayloadError:
        return
    assert job.camera_id and (job.snapshot_b64 is not None or job.snapshot_path or job.snapshot_key)


# --- contract v2: per-job settings --------------------------------------------------------------
V2_SETTINGS = {"conf": 0.3, "classes": ["deer"], "camera": {"clahe": True}, "max_age": 3}


def test_v2_settings_parse_and_round_trip():
    payload = _payload(v=2, **V2_SETTINGS)
    job = parse_payload(payload)
    assert (job.conf, job.classes, job.camera, job.max_age) == (0.3, ("deer",), {"clahe": True}, 3.0)
    assert job.to_payload() == {**payload, "max_age": 3.0}
    assert parse_payload(_payload(v=2)).has_settings is False  # v2 with no setting is still valid


def test_a_job_without_settings_is_written_as_v1_for_workers_that_speak_only_v1():
    assert parse_payload(_payload()).to_payload()["v"] == 1
    assert parse_payload(_payload(v=2, conf=0.5)).to_payload()["v"] == 2


@pytest.mark.parametrize("extra, match", [
    ({"v": 1, "conf": 0.3}, 'need "v": 2'),
    ({"v": 3}, "version"),
    ({"conf": 0}, "conf"),
    ({"conf": 1.5}, "conf"),
    ({"conf": True}, "conf"),
    ({"classes": []}, "classes"),
    ({"classes": "deer"}, "classes"),
    ({"classes": ["deer", 3]}, "classes"),
    ({"max_age": 0}, "max_age"),
    ({"max_age": float("inf")}, "max_age"),
    ({"camera": "clahe"}, "camera"),
    ({"camera": {"bogus": 1}}, r"camera\.bogus"),
    ({"camera": {"roi": {"x": 0, "y": 0, "width": -1, "height": 1}}}, r"camera\.roi"),
    ({"camera": {"confidence": 2}}, r"camera\.confidence"),
])
def test_v2_violations_name_the_field(extra, match):
    with pytest.raises(PayloadError, match=match):
        parse_payload(_payload(**{"v": 2, **extra}))
