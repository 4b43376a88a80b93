#!/usr/bin/env python3
"""Procedural generator of synthetic Ring-camera-like yard snapshots with deer (OpenCV + numpy only).

Seeded and reproducible: the same ``--seed`` and arguments give byte-identical images and labels
(each image gets its own ``numpy.random.default_rng([seed, split_id, index])`` stream).

Scenes
  * day:   colour; sky gradient, tree line, lawn gradient + texture, bushes, fence, house wall, sensor noise
  * night: IR look; low-contrast grayscale, grain, vignetting, IR hot spots, saved as 3-channel grey JPEG
  * optional Ring-style timestamp overlay, JPEG re-compression artefacts
Deer (class 0 ``deer``): body ellipse, neck, head + snout + ears, four two-segment legs, tail; brown/tan by day,
bright grey in IR; 4-45 % of frame width; facing left/right; head up or grazing; partial occlusion by bushes and
fence posts drawn *in front*; motion blur on some; 1-4 deer in some images.
Labels: YOLO txt, one line per deer ``0 cx cy w h`` (normalised). The box is the FULL animal extent (occluded parts
included), clipped to the frame.
Hard negatives: ``--neg-frac`` (default 0.2) of images have no deer but extra distractors (rocks, logs, bushes,
garden gnomes, signs).

Usage
  python make_dataset.py --out /tmp/deer-demo-data --n-train 400 --n-val 60 --seed 0
  python make_dataset.py --out DIR --n-train 0 --n-val 50 --val-seed 1001 --sizes 640x360 --quality 85
  python make_dataset.py --samples models/demo/samples --seed 7          # 1920x1080 + 640x360 demo snapshots

Output layout (ultralytics): DIR/images/{train,val}/*.jpg, DIR/labels/{train,val}/*.txt, DIR/data.yaml
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

NAMES = {0: "deer"}


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _c(rng, base, jitter):
    """Jitter a BGR colour."""
    return tuple(int(np.clip(b + rng.integers(-jitter, jitter + 1), 0, 255)) for b in base)


def _pt(x, y):
    return (int(round(x)), int(round(y)))


def vertical_gradient(h, w, top, bottom):
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top = np.array(top, np.float32)[None, None]
    bottom = np.array(bottom, np.float32)[None, None]
    return np.repeat(top * (1 - t) + bottom * t, w, axis=1)


def smooth_noise(rng, h, w, scale, amp):
    """Low-frequency noise (upsampled random grid)."""
    gh, gw = max(2, h // scale), max(2, w // scale)
    g = rng.normal(0, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC) * amp


# ----------------------------------------------------------------------------------------------------------------
# background
# ----------------------------------------------------------------------------------------------------------------
def draw_bush(img, rng, cx, cy, r, color, night=False):
    n = int(rng.integers(5, 12))
    for _ in range(n):
        dx, dy = rng.normal(0, r * 0.5), rng.normal(0, r * 0.25) - r * 0.2
        rr = max(2, int(r * rng.uniform(0.35, 0.7)))
        col = _c(rng, color, 18)
        cv2.circle(img, _pt(cx + dx, cy + dy), rr, col, -1, cv2.LINE_AA)
    # leaf speckle
    for _ in range(int(r * 1.5)):
        dx, dy = rng.normal(0, r * 0.55), rng.normal(0, r * 0.3) - r * 0.2
        col = _c(rng, color, 35)
        cv2.circle(img, _pt(cx + dx, cy + dy), max(1, int(r * 0.06)), col, -1)


def draw_tree(img, rng, x, ground, h, day):
    trunk_w = max(2, int(h * rng.uniform(0.04, 0.08)))
    trunk = (40, 60, 85) if day else (70, 70, 70)
    cv2.rectangle(img, _pt(x - trunk_w / 2, ground - h * 0.55), _pt(x + trunk_w / 2, ground), _c(rng, trunk, 12), -1)
    leaf = (40, 95, 45) if day else (95, 95, 95)
    for _ in range(int(rng.integers(6, 14))):
        cx = x + rng.normal(0, h * 0.18)
        cy = ground - h * rng.uniform(0.55, 0.95)
        cv2.circle(img, _pt(cx, cy), max(3, int(h * rng.uniform(0.12, 0.25))), _c(rng, leaf, 20), -1, cv2.LINE_AA)


def draw_house(img, rng, W, H, horizon, day):
    left = rng.random() < 0.5
    ww = int(W * rng.uniform(0.15, 0.35))
    x0, x1 = (0, ww) if left else (W - ww, W)
    y0 = int(rng.uniform(0, horizon * 0.5))
    y1 = int(horizon + (H - horizon) * rng.uniform(0.05, 0.3))
    base = _c(rng, (200, 205, 210), 40) if day else _c(rng, (120, 120, 120), 30)
    cv2.rectangle(img, (x0, y0), (x1, y1), base, -1)
    step = max(4, int(H * rng.uniform(0.015, 0.03)))
    line = tuple(max(0, v - 35) for v in base)
    for y in range(y0, y1, step):  # siding
        cv2.line(img, (x0, y), (x1, y), line, 1)
    if rng.random() < 0.6:  # window
        wx = x0 + int(ww * rng.uniform(0.2, 0.5))
        wy = y0 + int((y1 - y0) * rng.uniform(0.1, 0.4))
        ws = int(ww * rng.uniform(0.2, 0.35))
        cv2.rectangle(img, (wx, wy), (wx + ws, wy + int(ws * 1.2)), (60, 50, 40) if day else (30, 30, 30), -1)
        cv2.rectangle(img, (wx, wy), (wx + ws, wy + int(ws * 1.2)), (240, 240, 240) if day else (160, 160, 160), 2)


def draw_fence(img, rng, W, y_base, post_h, day, posts_only=False, x_range=None):
    col = _c(rng, (150, 175, 195), 30) if day else _c(rng, (150, 150, 150), 30)
    if rng.random() < 0.3 and day:
        col = _c(rng, (235, 235, 235), 15)  # white picket
    gap = max(8, int(post_h * rng.uniform(0.6, 1.6)))
    pw = max(2, int(post_h * rng.uniform(0.06, 0.12)))
    xa, xb = x_range if x_range else (0, W)
    if not posts_only:
        for fy in (0.3, 0.7):
            yy = int(y_base - post_h * fy)
            cv2.rectangle(img, (xa, yy - max(1, pw // 3)), (xb, yy + max(1, pw // 3)), col, -1)
    x = xa + int(rng.integers(0, gap))
    while x < xb:
        cv2.rectangle(img, (x, int(y_base - post_h)), (x + pw, int(y_base)), col, -1)
        x += gap


def draw_rock(img, rng, cx, cy, r, day):
    n = int(rng.integers(6, 10))
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.7, 1.1, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang) * 0.6], 1)
    pts[:, 1] = np.minimum(pts[:, 1], cy + r * 0.3)
    col = _c(rng, (130, 130, 128), 35) if day else _c(rng, (175, 175, 175), 30)
    cv2.fillPoly(img, [pts.astype(np.int32)], col, cv2.LINE_AA)
    cv2.ellipse(img, _pt(cx - r * 0.2, cy - r * 0.2), (max(1, int(r * 0.35)), max(1, int(r * 0.15))), 0, 0, 360,
                tuple(min(255, v + 25) for v in col), -1, cv2.LINE_AA)


def draw_log(img, rng, cx, cy, L, day):
    th = max(3, int(L * rng.uniform(0.12, 0.22)))
    ang = rng.uniform(-15, 15)
    col = _c(rng, (45, 75, 110), 20) if day else _c(rng, (185, 185, 185), 25)
    box = cv2.boxPoints(((cx, cy), (L, th), ang)).astype(np.int32)
    cv2.fillPoly(img, [box], col, cv2.LINE_AA)
    ex = cx + math.cos(math.radians(ang)) * L / 2
    ey = cy + math.sin(math.radians(ang)) * L / 2
    cv2.ellipse(img, _pt(ex, ey), (max(1, th // 4), th // 2), ang, 0, 360, tuple(min(255, v + 50) for v in col), -1)


def draw_gnome(img, rng, cx, ground, h, day):
    w = h * 0.4
    body = _c(rng, (160, 60, 30), 40) if day else _c(rng, (170, 170, 170), 20)
    hat = _c(rng, (30, 30, 200), 30) if day else _c(rng, (210, 210, 210), 20)
    cv2.ellipse(img, _pt(cx, ground - h * 0.25), (max(1, int(w / 2)), max(1, int(h * 0.25))), 0, 0, 360, body, -1)
    cv2.circle(img, _pt(cx, ground - h * 0.55), max(1, int(w * 0.3)), (150, 180, 230) if day else (200, 200, 200), -1)
    beard = np.array([[cx - w * 0.3, ground - h * 0.52], [cx + w * 0.3, ground - h * 0.52], [cx, ground - h * 0.3]])
    cv2.fillPoly(img, [beard.astype(np.int32)], (240, 240, 240), cv2.LINE_AA)
    tri = np.array([[cx - w * 0.35, ground - h * 0.62], [cx + w * 0.35, ground - h * 0.62], [cx + w * 0.1, ground - h]])
    cv2.fillPoly(img, [tri.astype(np.int32)], hat, cv2.LINE_AA)


def draw_sign(img, rng, cx, ground, h, day):
    pole = (60, 60, 60) if day else (150, 150, 150)
    cv2.line(img, _pt(cx, ground), _pt(cx, ground - h), pole, max(1, int(h * 0.05)))
    sw, sh = h * rng.uniform(0.5, 0.9), h * rng.uniform(0.3, 0.5)
    col = _c(rng, (40, 180, 220), 60) if day else _c(rng, (230, 230, 230), 20)
    cv2.rectangle(img, _pt(cx - sw / 2, ground - h), _pt(cx + sw / 2, ground - h + sh), col, -1)
    cv2.rectangle(img, _pt(cx - sw / 2, ground - h), _pt(cx + sw / 2, ground - h + sh), (20, 20, 20), 1)


def draw_distractor(img, rng, W, H, horizon, day):
    gy = rng.uniform(horizon + (H - horizon) * 0.1, H * 1.02)
    depth = (gy - horizon) / max(1.0, H - horizon)  # 0 far .. 1 near
    size = W * (0.03 + 0.22 * depth) * rng.uniform(0.6, 1.3)
    cx = rng.uniform(0, W)
    k = rng.choice(["rock", "log", "bush", "gnome", "sign"], p=[0.3, 0.2, 0.25, 0.13, 0.12])
    if k == "rock":
        draw_rock(img, rng, cx, gy, size * 0.4, day)
    elif k == "log":
        draw_log(img, rng, cx, gy, size * 1.2, day)
    elif k == "bush":
        draw_bush(img, rng, cx, gy, size * 0.5, (45, 110, 50) if day else (110, 110, 110), not day)
    elif k == "gnome":
        draw_gnome(img, rng, cx, gy, size * 0.6, day)
    else:
        draw_sign(img, rng, cx, gy, size * 0.8, day)


def make_background(rng, W, H, day):
    horizon = int(H * rng.uniform(0.2, 0.5))
    if day:
        sky = vertical_gradient(horizon, W, _c(rng, (230, 180, 130), 25), _c(rng, (240, 220, 200), 15))
        lawn = vertical_gradient(H - horizon, W, _c(rng, (70, 140, 95), 25), _c(rng, (40, 120, 60), 25))
        if rng.random() < 0.25:  # dry / autumn lawn
            lawn = lawn * np.array([0.7, 1.0, 1.5], np.float32)
    else:
        g0 = rng.uniform(40, 90)
        sky = vertical_gradient(horizon, W, (g0 * 0.5,) * 3, (g0 * 0.7,) * 3)
        lawn = vertical_gradient(H - horizon, W, (g0,) * 3, (g0 + rng.uniform(10, 40),) * 3)
    img = np.concatenate([sky, lawn], 0)
    tex = smooth_noise(rng, H, W, 24, 10) + smooth_noise(rng, H, W, 4, 6)
    tex[:horizon] *= 0.3
    img = np.clip(img + tex[..., None], 0, 255).astype(np.uint8)
    # grass blades
    for _ in range(int(W * H / 900)):
        x, y = rng.uniform(0, W), rng.uniform(horizon, H)
        ln = 2 + 6 * (y - horizon) / max(1, H - horizon)
        v = int(rng.integers(-25, 25))
        col = tuple(int(np.clip(c + v, 0, 255)) for c in img[min(int(y), H - 1), min(int(x), W - 1)].tolist())
        cv2.line(img, _pt(x, y), _pt(x + rng.normal(0, 1), y - ln), col, 1)
    # tree line
    for _ in range(int(rng.integers(2, 9))):
        draw_tree(img, rng, rng.uniform(0, W), horizon + rng.uniform(0, H * 0.05), H * rng.uniform(0.2, 0.5), day)
    if rng.random() < 0.35:
        draw_house(img, rng, W, H, horizon, day)
    if rng.random() < 0.5:  # back fence
        draw_fence(img, rng, W, horizon + (H - horizon) * rng.uniform(0.02, 0.2), H * rng.uniform(0.05, 0.15), day)
    for _ in range(int(rng.integers(0, 4))):
        bx = rng.uniform(0, W)
        by = horizon + (H - horizon) * rng.uniform(0.0, 0.3)
        draw_bush(img, rng, bx, by, H * rng.uniform(0.05, 0.12), (40, 100, 50) if day else (100, 100, 100))
    return img, horizon


# ----------------------------------------------------------------------------------------------------------------
# deer
# ----------------------------------------------------------------------------------------------------------------
def draw_deer(H, W, rng, cx, ground, body_len, facing, grazing, day, variety="v2"):
    """Render one deer on a transparent layer. Returns (layer BGR uint8, alpha float32 0..1)."""
    layer = np.zeros((H, W, 3), np.uint8)
    mask = np.zeros((H, W), np.uint8)
    f = 1 if facing == "right" else -1
    s = body_len
    if day:
        base = _c(rng, rng.choice([(40, 80, 130), (60, 105, 150), (50, 90, 120), (75, 120, 165)]), 15)
    else:
        g = int(rng.integers(170, 245) if variety == "v2" else rng.integers(105, 245))  # v3: some dim IR deer
        base = (g, g, g)
    dark = tuple(int(v * 0.7) for v in base)
    light = tuple(int(min(255, v * 1.25 + 20)) for v in base)
    belly = (205, 215, 225) if day else tuple(min(255, int(v * 1.1)) for v in base)

    leg_len = s * rng.uniform(0.55, 0.7)
    body_h = s * rng.uniform(0.2, 0.26)
    by = ground - leg_len - body_h * 0.3  # body centre y
    bx = cx
    lw = max(1, int(s * 0.055))

    def part(draw, col):
        draw(layer, col)
        draw(mask, 255)

    # legs (far pair darker, drawn first)
    for i, (ox, far) in enumerate([(0.35, True), (-0.3, True), (0.4, False), (-0.25, False)]):
        hip = (bx + f * ox * s, by + body_h * 0.3)
        bend = rng.uniform(-0.12, 0.12) * s
        knee = (hip[0] + bend * f * (1 if ox > 0 else -1), hip[1] + leg_len * 0.5)
        foot = (hip[0] + rng.uniform(-0.06, 0.06) * s, ground - (s * 0.03 if far else 0))
        col = dark if far else base
        part(lambda im, c, a=hip, b=knee: cv2.line(im, _pt(*a), _pt(*b), c if im.ndim == 3 else 255, lw + 1, cv2.LINE_AA), col)
        part(lambda im, c, a=knee, b=foot: cv2.line(im, _pt(*a), _pt(*b), c if im.ndim == 3 else 255, lw, cv2.LINE_AA), col)
        part(lambda im, c, a=foot: cv2.circle(im, _pt(*a), max(1, lw // 2 + 1), (30, 30, 30) if (im.ndim == 3 and day) else (c if im.ndim == 3 else 255), -1), col)

    # body
    ax = (max(2, int(s / 2)), max(2, int(body_h / 2 + s * 0.02)))
    tilt = rng.uniform(-6, 6)
    part(lambda im, c: cv2.ellipse(im, _pt(bx, by), ax, tilt, 0, 360, c if im.ndim == 3 else 255, -1, cv2.LINE_AA), base)
    # belly (light underside) and back shading
    cv2.ellipse(layer, _pt(bx, by + body_h * 0.22), (int(ax[0] * 0.75), max(1, int(ax[1] * 0.35))), tilt, 0, 180, belly, -1, cv2.LINE_AA)
    cv2.ellipse(layer, _pt(bx, by - body_h * 0.2), (int(ax[0] * 0.8), max(1, int(ax[1] * 0.3))), tilt, 180, 360, dark, -1, cv2.LINE_AA)
    # rump patch
    cv2.circle(layer, _pt(bx - f * s * 0.43, by - body_h * 0.05), max(1, int(body_h * 0.28)), light, -1, cv2.LINE_AA)

    # tail
    tail0 = (bx - f * s * 0.5, by - body_h * 0.25)
    tail1 = (tail0[0] - f * s * 0.08, tail0[1] + s * rng.uniform(-0.05, 0.1))
    part(lambda im, c: cv2.line(im, _pt(*tail0), _pt(*tail1), c if im.ndim == 3 else 255, max(2, int(lw * 1.5)), cv2.LINE_AA), light)

    # neck + head
    sh = (bx + f * s * 0.38, by - body_h * 0.15)  # shoulder
    if grazing:
        head = (sh[0] + f * s * rng.uniform(0.2, 0.3), ground - s * rng.uniform(0.05, 0.15))
    else:
        head = (sh[0] + f * s * rng.uniform(0.12, 0.22), sh[1] - s * rng.uniform(0.4, 0.55))
    nw = max(2, int(s * 0.11))
    part(lambda im, c: cv2.line(im, _pt(*sh), _pt(*head), c if im.ndim == 3 else 255, nw, cv2.LINE_AA), base)
    hr = max(2, int(s * 0.085))
    hang = math.degrees(math.atan2(head[1] - sh[1], head[0] - sh[0])) if grazing else (0 if f > 0 else 180)
    part(lambda im, c: cv2.ellipse(im, _pt(*head), (int(hr * 1.2), hr), hang, 0, 360, c if im.ndim == 3 else 255, -1, cv2.LINE_AA), base)
    # snout
    if grazing:
        sn = (head[0] + f * s * 0.06, head[1] + s * 0.09)
    else:
        sn = (head[0] + f * s * 0.14, head[1] + s * 0.04)
    part(lambda im, c: cv2.line(im, _pt(*head), _pt(*sn), c if im.ndim == 3 else 255, max(2, int(hr * 1.1)), cv2.LINE_AA), base)
    cv2.circle(layer, _pt(*sn), max(1, int(hr * 0.35)), (25, 25, 25) if day else (120, 120, 120), -1)
    eye_r = hr * (0.2 if day or variety == "v2" else rng.uniform(0.2, 0.45))  # v3: IR eye shine, often large
    cv2.circle(layer, _pt(head[0] + f * hr * 0.3, head[1] - hr * 0.2), max(1, int(eye_r)), (15, 15, 15) if day else (255, 255, 255), -1)
    # ears
    for dx in (-0.4, 0.3):
        ebase = (head[0] + f * hr * dx, head[1] - hr * 0.6)
        etip = (ebase[0] - f * s * 0.05, ebase[1] - s * rng.uniform(0.1, 0.15))
        part(lambda im, c, a=ebase, b=etip: cv2.line(im, _pt(*a), _pt(*b), c if im.ndim == 3 else 255, max(2, int(hr * 0.6)), cv2.LINE_AA), base)
    # antlers sometimes
    if rng.random() < 0.25 and not grazing:
        ant = (70, 110, 150) if day else (230, 230, 230)
        a0 = (head[0], head[1] - hr * 0.8)
        a1 = (a0[0] - f * s * 0.05, a0[1] - s * 0.2)
        a2 = (a1[0] + f * s * 0.1, a1[1] - s * 0.05)
        part(lambda im, c: cv2.line(im, _pt(*a0), _pt(*a1), c if im.ndim == 3 else 255, max(1, lw // 2), cv2.LINE_AA), ant)
        part(lambda im, c: cv2.line(im, _pt(*a1), _pt(*a2), c if im.ndim == 3 else 255, max(1, lw // 2), cv2.LINE_AA), ant)

    # fur texture
    layer = np.clip(layer.astype(np.int16) + rng.normal(0, 8, layer.shape).astype(np.int16), 0, 255).astype(np.uint8)
    return layer, mask.astype(np.float32) / 255.0


def motion_blur(a, k, angle):
    ker = np.zeros((k, k), np.float32)
    ker[k // 2, :] = 1.0
    M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), angle, 1.0)
    ker = cv2.warpAffine(ker, M, (k, k))
    ker /= max(ker.sum(), 1e-6)
    return cv2.filter2D(a, -1, ker)


# ----------------------------------------------------------------------------------------------------------------
# scene
# ----------------------------------------------------------------------------------------------------------------
def finish_night(img, rng):
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    g = (g - g.mean()) * rng.uniform(0.5, 0.85) + g.mean() * rng.uniform(0.8, 1.1)  # low contrast
    H, W = g.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r = np.sqrt(((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2)
    g *= 1.0 - rng.uniform(0.3, 0.6) * np.clip(r / 1.4, 0, 1) ** 2  # vignetting
    for _ in range(int(rng.integers(0, 3))):  # IR hot spots / reflections
        hx, hy = rng.uniform(0, W), rng.uniform(0, H)
        hs = rng.uniform(0.05, 0.25) * W
        g += rng.uniform(30, 90) * np.exp(-((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * hs**2))
    g += rng.normal(0, rng.uniform(5, 12), g.shape)  # grain
    g = cv2.GaussianBlur(np.clip(g, 0, 255), (3, 3), 0)
    return cv2.cvtColor(g.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def timestamp(img, rng, day):
    H, W = img.shape[:2]
    scale = H / 720 * rng.uniform(0.6, 0.9)
    txt = "%04d-%02d-%02d %02d:%02d:%02d" % (2026, rng.integers(1, 13), rng.integers(1, 29),
                                            rng.integers(6, 19) if day else rng.integers(20, 24),
                                            rng.integers(0, 60), rng.integers(0, 60))
    th = max(1, int(2 * H / 720))
    org = (int(W * 0.02), int(H * 0.06)) if rng.random() < 0.5 else (int(W * 0.6), int(H * 0.96))
    cv2.putText(img, txt, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), th + 2, cv2.LINE_AA)
    cv2.putText(img, txt, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), th, cv2.LINE_AA)


def haze(img, rng, horizon):
    """Fog / haze: blend toward a flat grey, strongest at the horizon (far away), thinning toward the camera."""
    H = img.shape[0]
    y = np.arange(H, dtype=np.float32)
    depth = np.clip(1.0 - (y - horizon) / max(1.0, H - horizon), 0, 1)
    depth[:horizon] = 1.0
    a = (rng.uniform(0.15, 0.55) * (0.35 + 0.65 * depth))[:, None, None]
    tint = np.array(_c(rng, (200, 200, 200), 25), np.float32)[None, None]
    return (img.astype(np.float32) * (1 - a) + tint * a).astype(np.uint8)


def precipitation(img, rng):
    """Rain streaks or snow dots over the whole frame (in front of everything)."""
    H, W = img.shape[:2]
    layer = img.copy()
    rain = rng.random() < 0.6
    for _ in range(int(W * H / rng.uniform(800, 3000))):
        x, y = rng.uniform(0, W), rng.uniform(0, H)
        v = int(rng.integers(170, 256))
        if rain:
            ln = H * rng.uniform(0.01, 0.04)
            cv2.line(layer, _pt(x, y), _pt(x + ln * 0.15, y + ln), (v, v, v), 1, cv2.LINE_AA)
        else:
            cv2.circle(layer, _pt(x, y), max(1, int(rng.uniform(0.5, 2.5) * W / 640)), (v, v, v), -1, cv2.LINE_AA)
    return cv2.addWeighted(img, 0.45, layer, 0.55, 0)


def make_scene(rng, W, H, day=None, n_deer=None, neg_frac=0.2, variety="v2"):
    """Return (BGR uint8 image, list of (x1, y1, x2, y2) boxes in pixels).

    variety "v2" is the generator v2 was trained on (and the held-out split made with; its random draws must
    not change). "v3" adds, with extra draws only on its own path: more night, smaller and larger deer,
    dim IR deer with eye shine, more distractors and occluders, dusk light, haze, rain/snow, defocus, IR
    foreground glare."""
    v3 = variety == "v3"
    if day is None:
        day = rng.random() < (0.45 if v3 else 0.6)
    img, horizon = make_background(rng, W, H, day)
    if n_deer is None:
        n_deer = 0 if rng.random() < neg_frac else int(rng.choice([1, 1, 1, 2, 2, 3, 4]))
    for _ in range(int(rng.integers(0, 5 if v3 else 3)) + (3 if n_deer == 0 else 0)):
        draw_distractor(img, rng, W, H, horizon, day)

    boxes = []
    deer_specs = []
    for _ in range(n_deer):
        lo, hi = (0.025, 0.55) if v3 else (0.04, 0.45)
        frac = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # total width as fraction of frame width
        body_len = frac * W / 1.45
        # ground line: farther (smaller) deer sit higher up the lawn
        depth = np.clip((frac - lo) / (hi - lo) + rng.normal(0, 0.12), 0, 1)
        ground = horizon + (H - horizon) * (0.12 + 0.85 * depth)
        ground = min(ground, H * rng.uniform(0.9, 1.08))
        deer_specs.append((ground, body_len))
    deer_specs.sort()  # far ones first
    for ground, body_len in deer_specs:
        cx = rng.uniform(-0.05, 1.05) * W
        layer, a = draw_deer(H, W, rng, cx, ground, body_len, rng.choice(["left", "right"]), rng.random() < 0.35, day,
                             variety)
        ys, xs = np.nonzero(a > 0.3)
        if len(xs) < 30:
            continue
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        full_w = (x2 - x1)
        if rng.random() < 0.25:  # motion blur
            k = int(max(3, body_len * rng.uniform(0.05, 0.15))) | 1
            ang = rng.uniform(-10, 10)
            layer = motion_blur(layer, k, ang)
            a = motion_blur(a, k, ang)
            ys, xs = np.nonzero(a > 0.3)
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if full_w < 6 or (y2 - y1) < 6:
            continue
        a3 = a[..., None]
        img = (img.astype(np.float32) * (1 - a3) + layer.astype(np.float32) * a3).astype(np.uint8)
        boxes.append((float(x1), float(y1), float(x2), float(y2)))
        # occluders in front of this deer
        r = rng.random()
        bush_p, fence_p = (0.3, 0.45) if v3 else (0.2, 0.3)
        if r < bush_p:
            draw_bush(img, rng, rng.uniform(x1, x2), y2 + (y2 - y1) * 0.05, (y2 - y1) * rng.uniform(0.25, 0.5),
                      (45, 110, 50) if day else (110, 110, 110))
        elif r < fence_p:
            draw_fence(img, rng, W, min(H, y2 + (y2 - y1) * 0.1), (y2 - y1) * rng.uniform(0.8, 1.3), day,
                       posts_only=rng.random() < 0.5, x_range=(max(0, int(x1 - 40)), min(W, int(x2 + 40))))
    # near-camera foreground sometimes
    if rng.random() < 0.15:
        draw_bush(img, rng, rng.choice([0, W]), H, H * rng.uniform(0.15, 0.3), (35, 90, 40) if day else (90, 90, 90))

    if v3 and rng.random() < 0.2:
        img = haze(img, rng, horizon)
    if v3 and rng.random() < 0.12:
        img = precipitation(img, rng)
    if day:
        gain = rng.uniform(0.45, 1.25) if v3 else rng.uniform(0.7, 1.2)  # v3: dusk too
        img = np.clip(img.astype(np.float32) * gain + rng.normal(0, rng.uniform(2, 6), img.shape),
                      0, 255).astype(np.uint8)
    else:
        img = finish_night(img, rng)
        if v3 and rng.random() < 0.3:  # IR glare: the ground near the camera washed out
            ramp = np.linspace(0, 1, H, dtype=np.float32)[:, None, None] ** rng.uniform(2, 5)
            img = np.clip(img.astype(np.float32) + ramp * rng.uniform(40, 110), 0, 255).astype(np.uint8)
    if v3 and rng.random() < 0.15:  # out of focus
        sigma = rng.uniform(0.8, 2.2) * W / 640
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.6:
        timestamp(img, rng, day)
    if rng.random() < 0.5:  # JPEG artefacts from a low-quality re-encode
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 70))])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img, boxes


def yolo_lines(boxes, W, H):
    out = []
    for x1, y1, x2, y2 in boxes:
        x1, x2 = max(0.0, x1), min(float(W), x2)
        y1, y2 = max(0.0, y1), min(float(H), y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        out.append(f"0 {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}")
    return out


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def parse_sizes(s):
    return [tuple(int(v) for v in t.lower().split("x")) for t in s.split(",") if t]


def sizes_from_range(lo, hi):
    """Ring-like sizes with width in [lo, hi]: 16:9 mostly, some 4:3."""
    cands = [(640, 360), (960, 540), (1280, 720), (1920, 1080), (640, 480), (960, 720), (1280, 960)]
    return [c for c in cands if lo <= c[0] <= hi] or [(640, 360)]


def pick_size(rng, sizes, variety="v2"):
    w169 = [s for s in sizes if abs(s[0] / s[1] - 16 / 9) < 0.05]
    other = [s for s in sizes if s not in w169]
    if w169 and (not other or rng.random() < 0.8):
        pool = w169
    else:
        pool = other
    # v2: smaller sizes more often (keeps files small); v3: every size as often (more 1080p)
    p = np.array([1.0 if variety == "v3" else 1.0 / (s[0] * s[1]) ** 0.5 for s in pool])
    return pool[int(rng.choice(len(pool), p=p / p.sum()))]


def write_split(out, split, n, seed, split_id, sizes, neg_frac, quality, variety="v2"):
    img_dir, lab_dir = Path(out) / "images" / split, Path(out) / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    n_boxes = n_neg = 0
    for i in range(n):
        rng = np.random.default_rng([seed, split_id, i])
        W, H = pick_size(rng, sizes, variety)
        img, boxes = make_scene(rng, W, H, neg_frac=neg_frac, variety=variety)
        lines = yolo_lines(boxes, W, H)
        name = f"{split}_{seed}_{i:05d}"
        cv2.imwrite(str(img_dir / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        (lab_dir / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        n_boxes += len(lines)
        n_neg += not lines
    print(f"{split}: {n} images, {n_boxes} deer boxes, {n_neg} empty images -> {img_dir}")


def write_samples(out, seed, sizes=((1920, 1080), (640, 360))):
    """Demo snapshots: day/night x deer/empty at each size, plus one PNG."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k = 0
    written = []
    for W, H in sizes:
        for day in (True, False):
            for deer in (True, False):
                if not day and not deer and W > 1000:  # keep the set at 7 JPEG + 1 PNG
                    continue
                tod = "day" if day else "night"
                for attempt in range(50):  # deer samples: want a clearly visible, reasonably sized deer
                    rng = np.random.default_rng([seed, 99, k, attempt])
                    img, boxes = make_scene(rng, W, H, day=day, n_deer=(1 if deer else 0))
                    if not deer or (boxes and (boxes[0][2] - boxes[0][0]) > 0.12 * W
                                    and boxes[0][0] > 0 and boxes[0][2] < W and boxes[0][3] < H):
                        break
                name = out / f"{tod}_{W}x{H}_{'deer' if deer else 'empty'}.jpg"
                cv2.imwrite(str(name), img, [cv2.IMWRITE_JPEG_QUALITY, 88])
                written.append((name, yolo_lines(boxes, W, H)))
                k += 1
    rng = np.random.default_rng([seed, 98])
    img, boxes = make_scene(rng, 1280, 720, day=True, n_deer=2)
    cv2.imwrite(str(out / "day_1280x720_deer.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    written.append((out / "day_1280x720_deer.png", yolo_lines(boxes, 1280, 720)))
    for name, lines in written:
        print(name, f"{len(lines)} deer", lines)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="dataset root (images/, labels/, data.yaml)")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0, help="train seed (and samples seed)")
    ap.add_argument("--val-seed", type=int, default=None, help="val seed (default: seed + 1000, i.e. different)")
    ap.add_argument("--imgsz-range", default="640,1280", help="min,max image WIDTH; Ring sizes in that range")
    ap.add_argument("--sizes", default=None, help="explicit sizes, e.g. 640x360,1280x720 (overrides --imgsz-range)")
    ap.add_argument("--neg-frac", type=float, default=0.2, help="fraction of images with no deer")
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality of written files")
    ap.add_argument("--variety", choices=["v2", "v3"], default="v2",
                    help="scene variety: v2 (the v2 model's data and the held-out split), v3 (more, see make_scene)")
    ap.add_argument("--samples", default=None, help="write demo snapshots to this dir instead of a dataset")
    ap.add_argument("--sample-sizes", default="1920x1080,640x360")
    a = ap.parse_args(argv)

    if a.samples:
        write_samples(a.samples, a.seed, parse_sizes(a.sample_sizes))
        return
    if not a.out:
        ap.error("--out or --samples is required")
    sizes = parse_sizes(a.sizes) if a.sizes else sizes_from_range(*(int(v) for v in a.imgsz_range.split(",")))
    val_seed = a.seed + 1000 if a.val_seed is None else a.val_seed
    if a.n_train:
        write_split(a.out, "train", a.n_train, a.seed, 0, sizes, a.neg_frac, a.quality, a.variety)
    if a.n_val:
        write_split(a.out, "val", a.n_val, val_seed, 1, sizes, a.neg_frac, a.quality, a.variety)
    root = Path(a.out).resolve()
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: deer\n"
    )


if __name__ == "__main__":
    main()
