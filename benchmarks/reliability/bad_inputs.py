#!/usr/bin/env python3
"""Bad input at volume: generated jobs through the real queue to a real `deer-worker run` process.

Random bytes, truncated and bit-flipped JPEGs and PNGs, GIF/BMP/TIFF/WebP, 1x1 images and
20000x20000 headers, grayscale, 16-bit, RGBA and palette PNGs, EXIF-rotated and progressive JPEGs,
payloads of the wrong schema, version and types, huge and invalid base64, bad job shapes, pickled
and forbidden jobs, file paths that are missing or escape snapshot_dirs, unknown and disabled
cameras, ROIs outside the image, stale snapshots. Each case names the outcomes it may have; the
run checks every job ended with one of them, that the worker never crashed or restarted its RQ
loop, and that its /metrics counters match the outcomes one for one.

    .venv/bin/python benchmarks/reliability/bad_inputs.py [--n 5000] [--seed 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rq import Queue

from harness import (ROOT, SAMPLES, RedisServer, account, free_port, log, result_messages, unaccounted_failures,
                     wait_all_ended, wait_for, worker_env)

from worker.jobqueue.connections import SERIALIZER
from worker.constants import DEFAULT_MAX_SNAPSHOT_BYTES, JOB_FUNCTION
from worker.evaluation.host import host_line  # noqa: E402

QUEUE = "bad-inputs"
OK, FAILED = "ok", "failed"
CRASH_SIGNS = ("unhandled exception", "RQ loop ended", "Redis unavailable", "Fatal Python error", "Segmentation")
REFUSED_KINDS = {"forbidden_function", "not_json"}  # counted as outcome="refused" by the worker
ZONES = {"cameras": {"roi-out": {"roi": {"x": 1000, "y": 0, "width": 2000, "height": 100}},
                     "roi-in": {"roi": {"x": 10, "y": 10, "width": 300, "height": 200}},
                     "roi-norm": {"roi": {"x": 0.5, "y": 0.5, "width": 0.5, "height": 0.5, "normalized": True}},
                     "off": {"enabled": False}}}


@dataclass
class Case:
    family: str
    expect: set[str]  # "ok", or "<state>:<kind>" e.g. "failed:corrupt_image", "expired:too_old"
    payload: object = None
    func: str = JOB_FUNCTION
    args: tuple | None = None  # job args when not (payload,)
    kwargs: dict | None = None
    pickled: bool = False
    image_size: tuple[int, int] | None = None  # expected result image (width, height) for valid input


def _f(*kinds: str) -> set[str]:
    return {f"failed:{k}" for k in kinds}


# --- image crafting ---------------------------------------------------------------------------
def _png(pixels: np.ndarray, color_type: int, bit_depth: int = 8, palette: bytes | None = None) -> bytes:
    """A hand-built PNG (cv2 cannot write palette PNGs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = pixels.shape[:2]
    raw = pixels.astype(">u2" if bit_depth == 16 else np.uint8).tobytes()
    stride = len(raw) // height
    rows = b"".join(b"\x00" + raw[i * stride:(i + 1) * stride] for i in range(height))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", palette)
    return out + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment with one IFD entry: Orientation."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1,
                                                                                   orientation, 0)
    tiff += struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (SOF) declaring another size."""
    pos = 2
    while pos < len(jpeg):
        marker, length = jpeg[pos + 1], struct.unpack(">H", jpeg[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return jpeg[:pos + 5] + struct.pack(">HH", height, width) + jpeg[pos + 9:]
        pos += 2 + length
    raise ValueError("no SOF")


def _flip_bits(data: bytes, rng: random.Random, flips: int, start: int = 0) -> bytes:
    buf = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(start, len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


class Inputs:
    """Every generator family, seeded. `snapshot_dir` is the worker's allowed directory."""

    def __init__(self, rng: random.Random, snapshot_dir: Path, outside_dir: Path) -> None:
        self.rng, self.snaps, self.outside = rng, snapshot_dir, outside_dir
        self.jpeg = (SAMPLES / "day_640x360_deer.jpg").read_bytes()
        self.night = (SAMPLES / "night_640x360_empty.jpg").read_bytes()
        self.png = (SAMPLES / "day_1280x720_deer.png").read_bytes()
        image = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        self.image = image
        self.small = cv2.resize(image, (160, 90))
        self.snaps.mkdir(parents=True, exist_ok=True)
        self.outside.mkdir(parents=True, exist_ok=True)
        (self.snaps / "ok.jpg").write_bytes(self.jpeg)
        (self.outside / "secret.jpg").write_bytes(self.jpeg)
        if not (self.snaps / "escape.jpg").exists():
            os.symlink(self.outside / "secret.jpg", self.snaps / "escape.jpg")
            os.mkfifo(self.snaps / "fifo.jpg")
        self.families = [
            (6, self.random_bytes), (8, self.truncated), (10, self.bit_flipped), (6, self.other_formats),
            (6, self.tiny_and_huge), (8, self.color_variants), (4, self.exif_rotated), (10, self.bad_schema),
            (3, self.bad_base64), (3, self.job_shapes), (2, self.refused), (5, self.paths), (6, self.cameras),
            (3, self.freshness), (8, self.valid),
        ]

    def one(self) -> Case:
        weights = [w for w, _ in self.families]
        return self.rng.choices([f for _, f in self.families], weights)[0]()

    # --- payload helpers --------------------------------------------------------------------
    def payload(self, data: bytes | None = None, camera: str = "cam1", **kw) -> dict:
        snapshot = kw.pop("snapshot", None) or {"b64": base64.b64encode(data).decode("ascii")}
        return {"v": 1, "camera_id": camera, "captured_at": time.time(), "snapshot": snapshot, **kw}

    def image_case(self, family: str, data: bytes, expect: set[str], size: tuple[int, int] | None = None) -> Case:
        return Case(family, expect, self.payload(data), image_size=size)

    # --- families ---------------------------------------------------------------------------
    def random_bytes(self) -> Case:
        n = self.rng.choice([0, 1, 2, 3, 8, 100, 1000, 50_000])
        data = self.rng.randbytes(n)
        prefix = self.rng.choice([b"", b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"])
        return self.image_case("random_bytes", prefix + data,
                               _f("unsupported_format", "corrupt_image", "empty_input", "image_too_large"))

    def truncated(self) -> Case:
        source = self.rng.choice([self.jpeg, self.night, self.png])
        cut = self.rng.randrange(1, len(source) - 1)
        return self.image_case("truncated", source[:cut], _f("corrupt_image", "unsupported_format"))

    def bit_flipped(self) -> Case:
        source = self.rng.choice([self.jpeg, self.png])
        data = _flip_bits(source, self.rng, self.rng.choice([1, 4, 32]), start=self.rng.choice([0, 20, 600]))
        return self.image_case("bit_flipped", data, {OK} | _f("corrupt_image", "unsupported_format",
                                                                "image_too_large"))

    def other_formats(self) -> Case:
        kind = self.rng.choice(["gif", "bmp", "tiff", "webp", "pdf", "svg", "jp2"])
        if kind in ("bmp", "tiff", "webp", "jp2"):
            data = cv2.imencode({"bmp": ".bmp", "tiff": ".tiff", "webp": ".webp", "jp2": ".jp2"}[kind], self.small)[1]
            data = data.tobytes()
        else:
            data = {"gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 30 + b";",
                    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>"}[kind]
        return self.image_case("other_format", data, _f("unsupported_format"))

    def tiny_and_huge(self) -> Case:
        kind = self.rng.choice(["jpeg1", "png1", "png_bomb", "jpeg_bomb", "jpeg_zero", "png_near_limit"])
        pixel = np.full((1, 1, 3), 200, np.uint8)
        if kind == "jpeg1":
            return self.image_case("tiny", cv2.imencode(".jpg", pixel)[1].tobytes(), {OK}, (1, 1))
        if kind == "png1":
            return self.image_case("tiny", cv2.imencode(".png", pixel)[1].tobytes(), {OK}, (1, 1))
        if kind == "png_bomb":
            return self.image_case("huge_header", _png_header(20000, 20000), _f("image_too_large"))
        if kind == "jpeg_bomb":
            return self.image_case("huge_header", _jpeg_with_size(self.jpeg, 20000, 20000), _f("image_too_large"))
        if kind == "jpeg_zero":
            return self.image_case("huge_header", _jpeg_with_size(self.jpeg, 0, 360), _f("corrupt_image"))
        # just under max_pixels (40 Mpx) with no pixel data: decoding is attempted and must fail cleanly
        return self.image_case("huge_header", _png_header(6000, 6000), _f("corrupt_image"))

    def color_variants(self) -> Case:
        h, w = self.small.shape[:2]
        gray = cv2.cvtColor(self.small, cv2.COLOR_BGR2GRAY)
        kind = self.rng.choice(["gray_jpeg", "gray_png", "gray16_png", "rgb16_png", "rgba_png", "palette_png",
                                "gray_alpha_png", "progressive_jpeg"])
        if kind == "gray_jpeg":
            data = cv2.imencode(".jpg", gray)[1].tobytes()
        elif kind == "gray_png":
            data = cv2.imencode(".png", gray)[1].tobytes()
        elif kind == "gray16_png":
            data = _png(gray.astype(np.uint16) * 257, 0, 16)
        elif kind == "rgb16_png":
            data = _png(self.small[:, :, ::-1].astype(np.uint16) * 257, 2, 16)
        elif kind == "rgba_png":
            data = cv2.imencode(".png", cv2.cvtColor(self.small, cv2.COLOR_BGR2BGRA))[1].tobytes()
        elif kind == "gray_alpha_png":
            data = _png(np.dstack([gray, np.full_like(gray, 255)]), 4)
        elif kind == "palette_png":
            palette = bytes(range(256)) * 3
            data = _png(gray, 3, palette=palette)
        else:
            data = cv2.imencode(".jpg", self.small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
        return self.image_case(f"color:{kind}", data, {OK}, (w, h))

    def exif_rotated(self) -> Case:
        orientation = self.rng.choice([1, 3, 6, 8])
        size = (360, 640) if orientation in (6, 8) else (640, 360)
        return self.image_case("exif_rotated", _with_exif_orientation(self.jpeg, orientation), {OK}, size)

    def bad_schema(self) -> Case:
        good = self.payload(self.jpeg)
        missing = self.rng.choice(["v", "camera_id", "snapshot"])
        variants = [
            {**good, "v": self.rng.choice([0, 3, 99, "1", None, 1.5, True, [1]])},  # 2 is valid (contract v2)
            {**good, "v": 2, **self.rng.choice([{"conf": 5}, {"conf": 0}, {"classes": "deer"}, {"classes": [1]},
                                                 {"max_age": -1}, {"camera": 5}, {"camera": {"roi": 5}}])},
            {**good, "conf": 0.5},  # a v2 setting in a v1 payload
            {k: v for k, v in good.items() if k != missing},
            {**good, "extra": 1},
            {**good, "camera_id": self.rng.choice([5, None, "", "../../etc", "a" * 65, "cam 1", "cam/1", ["x"]])},
            {**good, "snapshot": self.rng.choice(["abc", None, [], {}, {"b64": "x", "path": "/x"}, {"url": "http://x"},
                                                  {"b64": 12}, {"b64": None}, {"path": 5}])},
            {**good, "captured_at": self.rng.choice(["yesterday", "2026-11-27T00:00:00", True, -5, [1], {"a": 1}])},
            {**good, "job_id": self.rng.choice(["a:b", "", 5, "x" * 200, "a b"])},
            {**good, "model": self.rng.choice([5, [], {"name": "x"}])},
            self.rng.choice([[], "snapshot", 42, None, 3.14, True, [good]]),
        ]
        return Case("bad_schema", _f("bad_payload"), self.rng.choice(variants))

    def bad_base64(self) -> Case:
        kind = self.rng.choice(["huge", "invalid", "urlsafe", "whitespace", "padding"])
        if kind == "huge":  # refused by length before any decoding
            return Case("huge_base64", _f("payload_too_large"),
                        self.payload(snapshot={"b64": "A" * (4 * (DEFAULT_MAX_SNAPSHOT_BYTES // 3) + 400)}))
        text = base64.b64encode(self.jpeg[:3000]).decode()
        text = {"invalid": "!!" + text[2:], "urlsafe": text.replace("+", "-").replace("/", "_") + "-_",
                "whitespace": text[:100] + "\n" + text[100:], "padding": text + "="}[kind]
        # Python's base64 accepts excess padding: those bytes decode, to a truncated JPEG.
        expect = _f("bad_payload", "corrupt_image") if kind == "padding" else _f("bad_payload")
        return Case("bad_base64", expect, self.payload(snapshot={"b64": text}))

    def job_shapes(self) -> Case:
        good = self.payload(self.jpeg)
        kind = self.rng.choice(["no_args", "two_args", "kwargs", "both"])
        args, kwargs = {"no_args": ((), None), "two_args": ((good, good), None), "kwargs": ((), {"payload": good}),
                        "both": ((good,), {"x": 1})}[kind]
        return Case("job_shape", _f("bad_payload"), args=args, kwargs=kwargs)

    def refused(self) -> Case:
        if self.rng.random() < 0.5:
            return Case("pickled", _f("not_json"), self.payload(self.jpeg), pickled=True)
        func = self.rng.choice(["os.system", "subprocess.call", "builtins.eval", "worker.tasks.detect_snapshot.x",
                                "worker.tasks.DeerJob"])
        return Case("forbidden_function", _f("forbidden_function"), "id", func=func)

    def paths(self) -> Case:
        snaps = str(self.snaps)
        path, expect = self.rng.choice([
            (f"{snaps}/ok.jpg", {OK}), (f"{snaps}/missing-{self.rng.randrange(10**6)}.jpg", _f("snapshot_file")),
            (f"{snaps}/../outside/secret.jpg", _f("snapshot_file")), ("/etc/passwd", _f("snapshot_file")),
            (f"{snaps}/escape.jpg", _f("snapshot_file")), (f"{snaps}/fifo.jpg", _f("snapshot_file")),
            (f"{snaps}/" + "../" * 12 + "etc/shadow", _f("snapshot_file")), (snaps, _f("snapshot_file")),
            (f"{snaps}/ok.jpg/x", _f("snapshot_file")), (f"{snaps}/{'a' * 4096}", _f("snapshot_file")),
            (f"{snaps}/ok.jpg\x00", _f("bad_payload")), ("", _f("bad_payload")),
        ])
        size = (640, 360) if expect == {OK} else None
        return Case("path", expect, self.payload(snapshot={"path": path}), image_size=size)

    def cameras(self) -> Case:
        camera, expect = self.rng.choice([
            (f"unknown-{self.rng.randrange(10**9)}", {OK}), ("roi-out", _f("roi_outside_image")),
            ("roi-in", {OK}), ("roi-norm", {OK}), ("off", {"expired:camera_disabled"}),
        ])
        data = self.jpeg
        if self.rng.random() < 0.2:  # a pixel ROI lies outside a 1x1 image (a normalized one still fits)
            data, expect = cv2.imencode(".jpg", np.zeros((1, 1, 3), np.uint8))[1].tobytes(), (
                _f("roi_outside_image") if camera in ("roi-in", "roi-out") else expect)
        return Case("camera", expect, self.payload(data, camera=camera))

    def freshness(self) -> Case:
        kind = self.rng.choice(["stale", "iso", "future", "model"])
        if kind == "stale":
            return Case("stale", {"expired:too_old"}, self.payload(self.jpeg, captured_at=time.time() - 3600))
        if kind == "iso":
            now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
            return Case("iso_time", {OK}, self.payload(self.jpeg, captured_at=now))
        if kind == "future":
            return Case("future_time", {OK}, self.payload(self.jpeg, captured_at=time.time() + 86400))
        return Case("model", _f("model_unavailable"), self.payload(self.jpeg, model="someone-elses-model"))

    def valid(self) -> Case:
        source = self.rng.choice([(self.jpeg, (640, 360)), (self.night, (640, 360)), (self.png, (1280, 720))])
        return self.image_case("valid", source[0], {OK}, source[1])


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(
        b"IEND", b"")


def enqueue(conn, cases: list[Case]) -> list:
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    pickled = Queue(QUEUE, connection=conn)  # RQ's default serializer: pickle
    jobs = []
    for case in cases:
        target = pickled if case.pickled else queue
        args = case.args if case.args is not None else (case.payload,)
        jobs.append(target.enqueue(case.func, args=args, kwargs=case.kwargs or {}, result_ttl=3600,
                                   failure_ttl=3600))
    return jobs


def scrape_jobs_total(port: int) -> Counter:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    totals = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "deer_worker_jobs":
            for s in family.samples:
                if s.name == "deer_worker_jobs_total":
                    totals[(s.labels["outcome"], s.labels["error_kind"])] += int(s.value)
    return totals


def run_bad_inputs(n: int, *, workdir: Path, seed: int = 1, timeout: float = 300.0) -> dict:
    rng = random.Random(seed)
    inputs = Inputs(rng, workdir / "snaps", workdir / "outside")
    cases = [inputs.one() for _ in range(n)]
    zones = workdir / "zones.yaml"
    zones.write_text(json.dumps(ZONES))  # JSON is YAML
    server = RedisServer(workdir / "redis").start()
    conn = server.client()
    port = free_port()
    env = worker_env(server.url(), queue=QUEUE, max_age=3600, metrics_port=port, zones=str(zones),
                     snapshot_dirs=str(inputs.snaps), batch="4")
    log_path = workdir / "worker.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run"], cwd=ROOT, env=env,
                                stdout=out, stderr=out, start_new_session=True)
    try:
        wait_for(lambda: _ready(port), 300, "the worker to be ready", 0.2)
        started = time.monotonic()
        jobs = enqueue(conn, cases)
        ended = wait_all_ended(conn, [j.id for j in jobs], timeout)
        elapsed = time.monotonic() - started
        acc = account(conn, [j.id for j in jobs])
        metrics = scrape_jobs_total(port)
        alive = proc.poll() is None
        messages = result_messages(conn)
    finally:
        proc.terminate()
        exit_code = proc.wait(60)
        server.stop("sigkill")
    log_text = log_path.read_text(errors="replace")
    unexpected, wrong_size = [], []
    by_kind, by_family = Counter(), Counter()
    for case, job in zip(cases, jobs):
        state, kind = acc.outcome[job.id]
        got = OK if state == OK else f"{state}:{kind}"
        by_kind[got] += 1
        by_family[f"{case.family} -> {got}"] += 1
        if got not in case.expect:
            unexpected.append({"family": case.family, "expected": sorted(case.expect), "got": got, "job": job.id})
        elif got == OK and case.image_size:
            image = messages[job.id].get("image", {})
            if (image.get("width"), image.get("height")) != case.image_size:
                wrong_size.append({"family": case.family, "expected": case.image_size, "got": image})
    failed = sum(v for k, v in by_kind.items() if k.startswith("failed:") and k[7:] not in REFUSED_KINDS)
    refused = sum(v for k, v in by_kind.items() if k.startswith("failed:") and k[7:] in REFUSED_KINDS)
    metric = {outcome: sum(v for (o, _), v in metrics.items() if o == outcome)
              for outcome in ("ok", "failed", "refused", "expired")}
    return {
        "jobs": n, "seed": seed, "seconds": round(elapsed, 1), "all_ended": ended, "worker_alive": alive,
        "worker_exit": exit_code, "crash_lines": [line for line in log_text.splitlines()  # failed jobs log tracebacks: not these
                                                  if any(s in line for s in CRASH_SIGNS)][:20],
        "outcomes": dict(sorted(by_kind.items())), "by_family": dict(sorted(by_family.items())),
        "failed_jobs": failed, "refused_jobs": refused, "ok_jobs": by_kind[OK],
        "expired_jobs": sum(v for k, v in by_kind.items() if k.startswith("expired:")),
        "metrics_jobs_total": metric, "unexpected": unexpected, "wrong_image_size": wrong_size,
        "unaccounted": {job_id: acc.outcome[job_id] for job_id in acc.unaccounted},
    }


def failed_checks(report: dict) -> list[str]:
    """The run's verdict, check by check: every job ended as its case expects, the worker never crashed or
    restarted its RQ loop, and deer_worker_jobs_total matches the outcomes one for one."""
    failures = unaccounted_failures(report)
    if report["unexpected"]:
        failures.append(f"{len(report['unexpected'])} jobs ended other than their case expects: "
                        f"{report['unexpected'][:5]}")
    if report["wrong_image_size"]:
        failures.append(f"{len(report['wrong_image_size'])} ok jobs with the wrong image size: "
                        f"{report['wrong_image_size'][:3]}")
    if report["crash_lines"] or not report["worker_alive"]:
        failures.append(f"the worker crashed or restarted its RQ loop (alive {report['worker_alive']}): "
                        f"{report['crash_lines'][:3]}")
    counted = {"ok": report["ok_jobs"], "failed": report["failed_jobs"], "refused": report["refused_jobs"],
               "expired": report["expired_jobs"]}
    if report["metrics_jobs_total"] != counted:
        failures.append(f"deer_worker_jobs_total {report['metrics_jobs_total']} against the outcomes {counted}")
    return failures


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the report here too")
    args = p.parse_args()
    host = host_line()  # as the run starts: load and ISA decide the figures
    with tempfile.TemporaryDirectory(prefix="deer-bad-inputs-") as tmp:
        report = run_bad_inputs(args.n, workdir=Path(tmp), seed=args.seed)
    report["failed_checks"] = failed_checks(report)
    text = json.dumps({"host": host, **report}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    log(f"{report['jobs']} jobs in {report['seconds']} s: {report['ok_jobs']} ok, {report['failed_jobs']} failed, "
        f"{report['refused_jobs']} refused, {report['expired_jobs']} expired; unexpected {len(report['unexpected'])}")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
