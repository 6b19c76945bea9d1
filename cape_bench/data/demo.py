"""Built-in demo dataset: a synthetic stand-in for MP-100 in exactly its on-disk layout.

Every command of cape-bench can run on this dataset without the real MP-100. The
generator writes the same files the MP-100 loaders read (PROTOCOLS.md section 1):
fifteen COCO-style split files `annotations/mp100_split{k}_{train,val,test}.json`,
one image folder per category under `images/`, plus `keypoint_texts.json` (one text
description per keypoint, the role CapeX's description lists play) and `DEMO.json`
(provenance and counts).

Each category is an articulated keypoint template built from a few parametric
families (radial star, limbed body, biped, face, hand, garment outline, seat,
lamp, shelf, cycle, motor vehicle); the category table at the bottom of the
template section is plain data. Instances are rendered with pose jitter along the
kinematic tree, similarity transforms, cluttered backgrounds and occluders, so a
model can learn where keypoints are but cannot read them off trivially.

The dataset has MP-100's shape: 100 categories in its 8 supercategories, five
splits of 70 train / 10 val / 20 test categories, each category tested in one
split. As in MP-100, whose quadrupeds, birds and animal faces each share one
keypoint definition, most categories are species of a few families that share
their base category's keypoints and descriptions (`_SPECIES`); the 45 base
categories keep a keypoint definition of their own. So text support meets
mostly known keypoint descriptions, as on MP-100: `cape-bench data overlap`
puts the share of test descriptions seen in training at 0.81-0.87 per split
(69 of 100 categories fully seen), against 0.83-0.95 (81 of 100) on MP-100's
published splits.

Output is a pure function of the seed: each category draws from its own numpy
Generator seeded with `(seed, category_id)`, so the same seed gives byte-identical
JSON and identical JPEG bytes.
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from cape_bench.errors import ConfigError

__all__ = [
    "DEMO_VERSION",
    "default_cache_dir",
    "ensure_demo_dataset",
    "generate_demo_dataset",
]

DEMO_VERSION = 2
"""Bump whenever the generated files change for a given seed."""

GENERATOR_NAME = "cape_bench demo"
DEFAULT_INSTANCES_PER_CATEGORY = 40
NUM_SPLITS = 5
VAL_CATEGORIES_PER_SPLIT = 10
JPEG_QUALITY = 90
MIN_KEYPOINTS, MAX_KEYPOINTS = 5, 30

# The paper's 8-way taxonomy (PROTOCOLS.md 1.4), used verbatim as the JSON `supercategory`.
SUPERCATEGORIES = (
    "animal_body",
    "animal_face",
    "human_body",
    "human_face",
    "human_hand",
    "clothes",
    "furniture",
    "vehicle",
)

_ORDINALS = (
    "first", "second", "third", "fourth", "fifth", "sixth",
    "seventh", "eighth", "ninth", "tenth", "eleventh", "twelfth",
)

# Fill tones: the body colour of the instance, a near-white and a near-black.
_BODY, _LIGHT, _DARK = 0, 1, 2


# --------------------------------------------------------------------------------------
# Keypoint templates
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Template:
    """One category's keypoint layout in a canonical frame (x right, y down, |coords| <= 1)."""

    keypoints: tuple[str, ...]
    descriptions: tuple[str, ...]
    parents: tuple[int, ...]  # kinematic tree; -1 for the root; a parent precedes its children
    rest: np.ndarray  # (K, 2) rest pose
    jitter: np.ndarray  # (K,) std of the joint angle (radians) about the parent
    skeleton: tuple[tuple[int, int], ...]  # 0-based pairs
    edge_weights: tuple[float, ...]  # limb thickness multiplier per skeleton edge
    fills: tuple[tuple[tuple[int, ...], int, bool], ...]  # (polygon keypoint indices, tone, smooth)
    rings: tuple[tuple[int, int], ...]  # (centre, rim) pairs drawn as circles (wheels)
    straight: tuple[bool, ...]  # per skeleton edge: drawn as a line (False: part of a smooth outline)


def _canonical(rest: np.ndarray) -> np.ndarray:
    """Centred on the bounding box, longer half-side 1: the renderer places and sizes every template alike."""
    lo, hi = rest.min(0), rest.max(0)
    return (rest - (lo + hi) / 2) / max(float((hi - lo).max()) / 2, 1e-6)


class _Sketch:
    """Accumulates keypoints, the kinematic tree and the skeleton of one template."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.texts: list[str] = []
        self.parents: list[int] = []
        self.xy: list[np.ndarray] = []
        self.jitter: list[float] = []
        self.edges: dict[tuple[int, int], float] = {}
        self.fills: list[tuple[tuple[int, ...], int, bool]] = []
        self.rings: list[tuple[int, int]] = []

    def idx(self, ref: str | int) -> int:
        return ref if isinstance(ref, int) else self.names.index(ref)

    def add(self, name, text, xy, parent=None, jitter=0.1, edge=True, weight=1.0) -> int:
        if name in self.names:
            raise ValueError(f"duplicate keypoint name {name!r}")
        if (parent is None) != (not self.names):
            raise ValueError(f"keypoint {name!r}: only the first keypoint is the root")
        parent_idx = -1 if parent is None else self.idx(parent)
        self.names.append(name)
        self.texts.append(text)
        self.parents.append(parent_idx)
        self.xy.append(np.asarray(xy, dtype=np.float64))
        self.jitter.append(float(jitter))
        if parent_idx >= 0 and edge:
            self.link(parent_idx, len(self.names) - 1, weight=weight)
        return len(self.names) - 1

    def link(self, *refs, weight=1.0, closed=False) -> None:
        ids = [self.idx(r) for r in refs]
        pairs = list(zip(ids, ids[1:])) + ([(ids[-1], ids[0])] if closed else [])
        for a, b in pairs:
            key = (min(a, b), max(a, b))
            self.edges[key] = max(weight, self.edges.get(key, 0.0))

    def fill(self, *refs, tone=_BODY, smooth=False) -> None:
        """A filled polygon; `smooth` draws it, and its skeleton edges, as a closed spline."""
        self.fills.append((tuple(self.idx(r) for r in refs), tone, smooth))

    def ring(self, centre, rim) -> None:
        self.rings.append((self.idx(centre), self.idx(rim)))

    def build(self) -> _Template:
        if not MIN_KEYPOINTS <= len(self.names) <= MAX_KEYPOINTS:
            raise ValueError(f"template has {len(self.names)} keypoints, outside 5..30")
        rest = _canonical(np.stack(self.xy))
        edges = sorted(self.edges)
        curved = {(min(a, b), max(a, b)) for ids, _, smooth in self.fills if smooth
                  for a, b in zip(ids, ids[1:] + ids[:1])}
        return _Template(
            keypoints=tuple(self.names),
            descriptions=tuple(self.texts),
            parents=tuple(self.parents),
            rest=rest,
            jitter=np.asarray(self.jitter),
            skeleton=tuple(edges),
            edge_weights=tuple(self.edges[e] for e in edges),
            fills=tuple(self.fills),
            rings=tuple(self.rings),
            straight=tuple(e not in curved for e in edges),
        )


def _unit(angle_deg: float, sx: float = 1.0) -> np.ndarray:
    rad = math.radians(angle_deg)
    return np.array([sx * math.cos(rad), math.sin(rad)])


class _Limb(NamedTuple):
    """A mirrored pair of jointed limbs hanging off one node.

    Joint keypoints are named `{side}_{name}_{joint}` / "{joint text} of the {side}
    {text}" unless the joint entry itself contains `{side}`. `angle` is the direction
    of the first segment in degrees (0 = straight out sideways, 90 = down, -90 = up);
    each later segment turns by `bend`. `start` offsets the limb's origin from the
    attachment node; a zero-length segment puts a joint right at the origin.
    """

    attach: str
    name: str
    text: str
    joints: tuple[tuple[str, str], ...]
    angle: float = 0.0
    segment: float | tuple[float, ...] = 0.3
    bend: float = 0.0
    start: tuple[float, float] = (0.0, 0.0)
    jitter: float = 0.2
    weight: float = 1.0


def _add_limb_pair(s: _Sketch, limb: _Limb, left_sign: float) -> None:
    segments = limb.segment if isinstance(limb.segment, tuple) else (limb.segment,) * len(limb.joints)
    for side, sx in (("left", left_sign), ("right", -left_sign)):
        parent = limb.attach.format(side=side)
        origin = s.xy[s.idx(parent)] + np.array([sx * limb.start[0], limb.start[1]])
        angle = limb.angle
        for (joint, joint_text), seg in zip(limb.joints, segments):
            origin = origin + seg * _unit(angle, sx)
            if "{side}" in joint:
                name, text = joint.format(side=side), joint_text.format(side=side)
            else:
                name = f"{side}_{limb.name}_{joint}"
                text = f"{joint_text} of the {side} {limb.text}"
            parent = s.add(name, text, origin, parent, limb.jitter if seg > 0 else 0.02, weight=limb.weight)
            if seg > 0:
                angle += limb.bend


# -- family: radial (starfish-like: a hub with n jointed arms) -------------------------

_ARM_SEGMENTS = {
    1: (("tip", "tip"),),
    2: (("middle", "middle"), ("tip", "tip")),
    3: (("base", "base"), ("middle", "middle"), ("tip", "tip")),
}


def _radial(arms, segments, limb="arm", hub="centre of the body where the arms meet",
            spread=(-90.0, 270.0), counting="counting clockwise from the top",
            extras=(), jitter=0.22, weight=1.6):
    s = _Sketch()
    s.add("centre", hub, (0.0, 0.0))
    full_circle = abs(spread[1] - spread[0]) >= 359
    step = (spread[1] - spread[0]) / (arms if full_circle else arms - 1)
    for a in range(arms):
        direction = _unit(spread[0] + a * step)
        parent = "centre"
        for i, (seg, seg_text) in enumerate(_ARM_SEGMENTS[segments]):
            parent = s.add(
                f"{limb}{a + 1}_{seg}",
                f"{seg_text} of the {_ORDINALS[a]} {limb}, {counting}",
                direction * (i + 1) / segments,
                parent,
                jitter,
                weight=weight * (1.0 - 0.25 * i / segments),
            )
    for name, text, x, y in extras:
        s.add(name, text, (x, y), "centre", 0.08, weight=weight * 1.4)
    return s.build()


# -- family: limbed body (a spine chain with mirrored limb pairs) ---------------------


def _limbed(spine, limbs=(), root=0, left_sign=-1.0, extras=(), links=(), fills=(), body_weight=1.8):
    """spine rows: (name, text, x, y, jitter), chained in order and rooted at `root`.

    extras rows: (name, text, x, y, parent, jitter). `left_sign=-1` puts the body's
    left on the image left (seen from above, head up); +1 is a front view.
    """
    s = _Sketch()
    order = [root, *range(root - 1, -1, -1), *range(root + 1, len(spine))]
    for i in order:
        name, text, x, y, jitter = spine[i]
        parent = None if i == root else spine[i + 1 if i < root else i - 1][0]
        s.add(name, text, (x, y), parent, jitter, weight=body_weight)
    for name, text, x, y, parent, jitter in extras:
        s.add(name, text, (x, y), parent, jitter)
    for limb in limbs:
        _add_limb_pair(s, limb, left_sign)
    for chain in links:
        s.link(*chain)
    for polygon, tone in fills:
        s.fill(*polygon, tone=tone, smooth=True)
    return s.build()


_LEG2 = (("knee", "knee"), ("foot", "foot"))
_TIP = (("tip", "tip"),)


# -- family: biped (front view, so the figure's left is on the image right) ------------

_BIPED_JOINTS = {
    "shoulder": ("{side}_shoulder", "{side} shoulder joint at the top of the arm", 0.0),
    "elbow": ("{side}_elbow", "{side} elbow where the arm bends", 0.32),
    "wrist": ("{side}_wrist", "{side} wrist where the hand meets the arm", 0.3),
    "hand": ("{side}_hand_tip", "fingertips of the {side} hand", 0.13),
    "gripper": ("{side}_gripper", "{side} gripper claw at the end of the arm", 0.16),
    "hip": ("{side}_hip", "{side} hip joint at the top of the leg", 0.0),
    "knee": ("{side}_knee", "{side} knee where the leg bends", 0.42),
    "ankle": ("{side}_ankle", "{side} ankle just above the foot", 0.4),
    "toe": ("{side}_toe", "tip of the {side} foot", 0.14),
    "foot": ("{side}_foot", "tip of the {side} foot", 0.42),
}


def _biped(head=("head_top",), arms=("shoulder", "elbow", "wrist"), legs=("hip", "knee", "ankle"),
           arm_angle=70.0, arm_bend=10.0, leg_angle=82.0, leg_bend=4.0, jitter=0.3, body_weight=1.8):
    spine = []
    if "head_top" in head:
        spine.append(("head_top", "top of the head", 0.0, -1.0, 0.1))
    spine += [("neck", "base of the neck", 0.0, -0.62, 0.0), ("pelvis", "centre of the pelvis", 0.0, 0.05, 0.08)]
    face_parent = "head_top" if "head_top" in head else "neck"
    extras, limbs = [], []
    if "nose" in head:
        extras.append(("nose", "tip of the nose", 0.0, -0.82, face_parent, 0.08))
        face_parent = "nose"
    if "visor" in head:
        extras.append(("visor_centre", "centre of the helmet visor", 0.0, -0.8, face_parent, 0.05))
        face_parent = "visor_centre"
    if "eyes" in head:
        limbs.append(_Limb(face_parent, "eye", "eye", (("{side}_eye", "centre of the {side} eye"),), segment=0.0,
                           start=(0.06, -0.05)))
    if "ears" in head:
        limbs.append(_Limb(face_parent, "ear", "ear", (("{side}_ear", "{side} ear at the side of the head"),),
                           segment=0.0,
                           start=(0.13, 0.0)))
    if "antennae" in head:
        limbs.append(_Limb("head_top", "antenna", "antenna", _TIP, angle=-65.0, segment=0.2,
                           start=(0.06, 0.0), jitter=0.3))
    for part, attach, joints, angle, bend, start, jit in (
        ("arm", "neck", arms, arm_angle, arm_bend, (0.25, 0.05) if arms[0] == "shoulder" else (0.02, 0.04), jitter),
        ("leg", "pelvis", legs, leg_angle, leg_bend, (0.13, 0.02) if legs[0] == "hip" else (0.03, 0.02), jitter * 0.6),
    ):
        table = [_BIPED_JOINTS[j] for j in joints]
        limbs.append(_Limb(attach, part, part, tuple((n, t) for n, t, _ in table), angle=angle,
                           segment=tuple(seg for _, _, seg in table), bend=bend, start=start, jitter=jit,
                           weight=1.2))
    return _limbed(spine, limbs, root=len(spine) - 2, left_sign=1.0, extras=extras, body_weight=body_weight)


# -- family: face (front view) --------------------------------------------------------

_OUTLINE_ANGLES = {4: (-90, 0, 90, 180), 6: (-90, -30, 30, 90, 150, 210), 8: (-90, -45, 0, 45, 90, 135, 180, 225)}


def _outline_point(angle: int) -> tuple[str, str]:
    x, y = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    if abs(x) < 1e-6:
        if y < 0:
            return "forehead_top", "top of the forehead at the hairline"
        return "chin", "chin at the bottom of the face"
    side = "left" if x > 0 else "right"  # front view: the face's left is on the image right
    if abs(x) > 0.95:
        return f"{side}_cheek", f"{side} cheek at the widest point of the face"
    if y < 0:
        return f"{side}_temple", f"{side} temple at the side of the forehead"
    return f"{side}_jaw", f"{side} side of the jaw"


_EYE_POINTS = {
    1: (("eye", "centre of the {side} eye", 0.0, 0.0),),
    2: (("eye_inner_corner", "inner corner of the {side} eye", -0.1, 0.0),
        ("eye_outer_corner", "outer corner of the {side} eye", 0.1, 0.0)),
    4: (("eye_inner_corner", "inner corner of the {side} eye", -0.1, 0.0),
        ("upper_eyelid", "middle of the {side} upper eyelid", 0.0, -0.06),
        ("eye_outer_corner", "outer corner of the {side} eye", 0.1, 0.0),
        ("lower_eyelid", "middle of the {side} lower eyelid", 0.0, 0.06)),
}
_BROW_POINTS = {
    2: (("eyebrow_inner", "inner end of the {side} eyebrow", -0.12),
        ("eyebrow_outer", "outer end of the {side} eyebrow", 0.12)),
    3: (("eyebrow_inner", "inner end of the {side} eyebrow", -0.13),
        ("eyebrow_middle", "middle of the {side} eyebrow", 0.0),
        ("eyebrow_outer", "outer end of the {side} eyebrow", 0.13)),
}


def _face(outline=6, brows=0, eyes=1, nose=1, mouth=2, ears=None, whiskers=False, nose_word="nose",
          width=0.75, height=0.95, eye_y=-0.22, eye_dx=0.3, mouth_y=0.45, mouth_w=0.25):
    s = _Sketch()
    tip = s.add(f"{nose_word}_tip", f"tip of the {nose_word}", (0.0, 0.1))
    if nose >= 2:
        s.add(f"{nose_word}_bridge", f"bridge of the {nose_word} between the eyes", (0.0, -0.12), tip, 0.02)
    if nose >= 4:
        for side, sx in (("left", 1), ("right", -1)):
            s.add(f"{side}_nostril", f"{side} nostril beside the {nose_word} tip", (sx * 0.09, 0.14), tip, 0.03)
    ring = []
    for angle in _OUTLINE_ANGLES.get(outline, ()):
        name, text = _outline_point(angle)
        ring.append(s.add(name, text, (width * math.cos(math.radians(angle)), height * math.sin(math.radians(angle))),
                          tip, 0.03, edge=False, weight=1.3))
    if ring:
        s.link(*ring, closed=True, weight=1.3)
        s.fill(*ring, smooth=True)
    for side, sx in (("left", 1), ("right", -1)):
        centre = np.array([sx * eye_dx, eye_y])
        pts = [s.add(f"{side}_{n}", t.format(side=side), centre + (sx * dx, dy), tip, 0.02, edge=False)
               for n, t, dx, dy in _EYE_POINTS[eyes]]
        if eyes == 4:
            s.link(*pts, closed=True, weight=0.6)
            s.fill(*pts, tone=_LIGHT, smooth=True)
        elif eyes == 2:
            s.link(*pts, weight=0.8)
        if brows:
            s.link(*[s.add(f"{side}_{n}", t.format(side=side), (sx * (eye_dx + dx), eye_y - 0.2 - 0.04 * (dx == 0)),
                           tip, 0.05, edge=False) for n, t, dx in _BROW_POINTS[brows]], weight=0.9)
        if ears == "pointed":
            base = s.add(f"{side}_ear_base", f"inner base of the {side} ear", (sx * width * 0.35, -height * 0.92), tip,
                         0.05, edge=False)
            top = s.add(f"{side}_ear_tip", f"tip of the {side} ear", (sx * width * 0.9, -height * 1.35), base, 0.15)
            s.fill(base, top, _nearest(s, ring, top) if ring else base)
            if ring:
                s.link(top, _nearest(s, ring, top))
        elif ears in ("round", "tuft"):
            name, text, xy = (("ear", "centre of the {side} ear", (sx * width * 1.05, -height * 0.55))
                              if ears == "round"
                              else ("ear_tuft_tip", "tip of the {side} ear tuft", (sx * width * 0.8, -height * 1.25)))
            ear = s.add(f"{side}_{name}", text.format(side=side), xy, tip, 0.12, edge=False)
            if ring:
                s.link(ear, _nearest(s, ring, ear), weight=1.5)
        if whiskers:
            s.add(f"{side}_whisker_tip", f"tip of the {side} whiskers", (sx * width * 1.25, 0.2), tip, 0.15, weight=0.5)
    if nose >= 2:
        s.link(f"{nose_word}_bridge", tip)
    if nose >= 4:
        s.link("left_nostril", tip, "right_nostril")
    mouth_pts = {
        2: (("left_mouth_corner", "left corner of the mouth", mouth_w, 0.0),
            ("right_mouth_corner", "right corner of the mouth", -mouth_w, 0.0)),
        3: (("left_mouth_corner", "left corner of the mouth", mouth_w, 0.0),
            ("lower_lip", "middle of the lower lip", 0.0, 0.08),
            ("right_mouth_corner", "right corner of the mouth", -mouth_w, 0.0)),
        4: (("left_mouth_corner", "left corner of the mouth", mouth_w, 0.0),
            ("upper_lip", "middle of the upper lip", 0.0, -0.07),
            ("right_mouth_corner", "right corner of the mouth", -mouth_w, 0.0),
            ("lower_lip", "middle of the lower lip", 0.0, 0.1)),
    }.get(mouth, ())
    ids = [s.add(n, t, (dx, mouth_y + dy), tip, 0.04, edge=False) for n, t, dx, dy in mouth_pts]
    if len(ids) == 4:
        s.link(*ids, closed=True)
        s.fill(*ids, tone=_DARK, smooth=True)
    elif ids:
        s.link(*ids)
    return s.build()


def _nearest(s: _Sketch, candidates: list[int], ref: int) -> int:
    return min(candidates, key=lambda i: float(np.linalg.norm(s.xy[i] - s.xy[ref])))


# -- family: hand (palm towards the viewer, fingers up, thumb on the image right) -------

_FINGERS = {
    "thumb": ("thumb", "thumb"),
    "index": ("index_finger", "index finger"),
    "middle": ("middle_finger", "middle finger"),
    "ring": ("ring_finger", "ring finger"),
    "little": ("little_finger", "little finger"),
    "mitt": ("finger_pocket", "finger pocket of the mitten"),
}
_FINGER_JOINTS = {
    2: (("base", "base"), ("tip", "tip")),
    3: (("base", "base"), ("middle_joint", "middle joint"), ("tip", "tip")),
    4: (("base", "base"), ("lower_joint", "lower joint"), ("upper_joint", "upper joint"), ("tip", "tip")),
}


def _hand(fingers=("thumb", "index", "middle", "ring", "little"), joints=3, length=0.75, spread=12.0,
          curl=None, palm=True, cuff=False, finger_weight=1.0):
    s = _Sketch()
    s.add("wrist", "centre of the wrist", (0.0, 0.75))
    hub = s.add("palm_centre", "centre of the palm", (0.0, 0.3), "wrist", 0.03) if palm else 0
    others = [f for f in fingers if f != "thumb"]
    curl = curl or {}
    bases = {}
    for finger in fingers:
        if finger == "thumb":
            base_xy, angle, seg_len = np.array([0.34, 0.38]), -40.0, length * 0.75
        else:
            i = others.index(finger)
            x = 0.0 if len(others) == 1 else 0.3 - 0.6 * i / (len(others) - 1)
            base_xy, angle, seg_len = np.array([x, -0.05 + 0.06 * abs(x) / 0.3]), -90.0 - spread * (x / 0.3), length
        word, word_text = _FINGERS[finger]
        c = curl.get(finger, 0.0)
        parent, xy = hub, base_xy
        for j, (joint, joint_text) in enumerate(_FINGER_JOINTS[joints]):
            if j:
                xy = xy + seg_len / (joints - 1) * (1 - 0.6 * c) * _unit(angle)
                angle += 35.0 * c
            parent = s.add(f"{word}_{joint}", f"{joint_text} of the {word_text}", xy, parent,
                           0.05 if j == 0 else 0.22, weight=finger_weight)
            bases.setdefault(finger, parent)
    if cuff:
        a = s.add("cuff_thumb_side", "thumb side of the cuff opening", (0.3, 1.0), "wrist", 0.03)
        b = s.add("cuff_little_finger_side", "little-finger side of the cuff opening", (-0.3, 1.0), "wrist", 0.03)
        s.link(a, b)
        s.fill(a, bases["thumb"], *[bases[f] for f in others], b)
    else:
        s.fill("wrist", bases["thumb"], *[bases[f] for f in others])
    return s.build()


# -- family: garment outline (front view: the garment's left is on the image right) -----

_SLEEVES = {
    None: (),
    "short": (("sleeve_outer_hem", "outer corner of the {side} sleeve hem", 0.85, -0.5),
              ("sleeve_inner_hem", "inner corner of the {side} sleeve hem", 0.66, -0.33)),
    "long": (("cuff_outer", "outer edge of the {side} cuff", 0.98, 0.2),
             ("cuff_inner", "inner edge of the {side} cuff", 0.8, 0.28)),
    "wide": (("sleeve_outer_hem", "outer corner of the {side} sleeve hem", 1.1, -0.15),
             ("sleeve_inner_hem", "inner corner of the {side} sleeve hem", 1.0, 0.35)),
}


def _garment(sleeve=None, length=0.5, collar="round", flare=0.0, armpit=True, waist=True, legs=False, hood=False,
             shoulder_x=0.5):
    s = _Sketch()
    neck_y = {"round": -0.75, "v": -0.35, "high": -0.88}[collar]
    s.add("neckline_front_centre", "front centre of the neckline", (0.0, neck_y))
    halves = {}
    for side, sx in (("left", 1), ("right", -1)):
        half = [s.add(f"{side}_neckline", f"{side} side of the neckline", (sx * 0.22, -0.95), 0, 0.02)]
        half.append(s.add(f"{side}_shoulder", f"{side} shoulder seam at the top of the garment",
                          (sx * shoulder_x, -0.85), half[0], 0.04, edge=False))
        parent = half[-1]
        for i, (n, t, x, y) in enumerate(_SLEEVES[sleeve]):
            parent = s.add(f"{side}_{n}", t.format(side=side), (sx * x, y), parent, 0.25 if i == 0 else 0.04,
                           edge=False)
            half.append(parent)
        if armpit:
            half.append(s.add(f"{side}_armpit", f"{side} armpit where the sleeve meets the body",
                              (sx * 0.45, -0.35), 0, 0.03, edge=False))
        if waist:
            half.append(s.add(f"{side}_waist", f"{side} side of the waist", (sx * 0.42, 0.2), half[-1], 0.04,
                              edge=False))
        if legs:
            outer = s.add(f"{side}_leg_outer_hem", f"outer corner of the {side} trouser-leg hem", (sx * 0.46, 1.0),
                          half[-1], 0.1, edge=False)
            half += [outer, s.add(f"{side}_leg_inner_hem", f"inner corner of the {side} trouser-leg hem",
                                  (sx * 0.1, 1.0), outer, 0.05, edge=False)]
        else:
            half.append(s.add(f"{side}_hem", f"{side} corner of the bottom hem", (sx * (0.44 + flare), length),
                              half[-1], 0.06, edge=False))
        halves[side] = half
    bottom = (s.add("crotch", "crotch where the trouser legs meet", (0.0, 0.38), 0, 0.03, edge=False) if legs
              else s.add("hem_centre", "centre of the bottom hem", (0.0, length + 0.03), 0, 0.03, edge=False))
    loop = [0, *halves["left"], bottom, *reversed(halves["right"])]
    s.link(*loop, closed=True, weight=1.2)
    s.fill(*loop)
    if hood:
        sides = [s.add(f"{side}_hood_side", f"{side} side of the hood", (sx * 0.34, -1.12), f"{side}_neckline", 0.05,
                       edge=False) for side, sx in (("left", 1), ("right", -1))]
        top = s.add("hood_top", "top of the hood", (0.0, -1.35), sides[0], 0.03, edge=False)
        chain = ["left_neckline", sides[0], top, sides[1], "right_neckline"]
        s.link(*chain, weight=1.2)
        s.fill(*chain)
    return s.build()


# -- family: seat / table (oblique view; left and right as seen by the viewer) ----------

_CORNERS = (("front_left", "front left"), ("front_right", "front right"),
            ("back_right", "back right"), ("back_left", "back left"))


def _seat(width=0.8, depth=0.35, leg=0.8, back=0.0, arms=0.0, surface="seat", pedestal_feet=0):
    s = _Sketch()
    dx, dy = depth * 0.6, -depth * 0.5
    corner_xy = {"front_left": (-width / 2, 0.0), "front_right": (width / 2, 0.0),
                 "back_right": (width / 2 + dx, dy), "back_left": (-width / 2 + dx, dy)}
    surface_text = {"seat": "seat", "top": "tabletop"}[surface]
    corners = []
    for key, text in _CORNERS:
        corners.append(s.add(f"{surface}_{key}_corner", f"{text} corner of the {surface_text}", corner_xy[key],
                             corners[0] if corners else None, 0.03, edge=False))
    s.link(*corners, closed=True, weight=1.3)
    s.fill(*corners)
    if pedestal_feet:
        centre = np.mean([corner_xy[k] for k, _ in _CORNERS], axis=0)
        top = s.add("post_top", "top of the central post under the seat", centre, 0, 0.02, edge=False)
        post = s.add("post_bottom", "bottom of the central post", centre + (0.0, leg * 0.85), top, 0.03, weight=1.6)
        for f in range(pedestal_feet):
            a = math.radians(180.0 * (f + 0.5) / pedestal_feet)
            s.add(f"base_foot_{f + 1}", f"end of the {_ORDINALS[f]} foot of the base, from the right",
                  centre + (0.0, leg) + (0.4 * width * math.cos(a) - 0.1, 0.15 * depth * math.sin(a)), post, 0.05)
    else:
        for (key, text), c in zip(_CORNERS, corners):
            s.add(f"{key}_leg_foot", f"foot of the {text} leg", np.asarray(corner_xy[key]) + (0.0, leg), c, 0.04)
    if back:
        tops = [s.add(f"backrest_top_{side}", f"top {side} corner of the backrest",
                      np.asarray(corner_xy[f"back_{side}"]) + (0.0, -back), f"{surface}_back_{side}_corner", 0.06,
                      weight=1.3) for side in ("left", "right")]
        s.link(*tops, weight=1.3)
        s.fill(f"{surface}_back_left_corner", f"{surface}_back_right_corner", tops[1], tops[0])
    if arms:
        for side in ("left", "right"):
            front = s.add(f"{side}_armrest_front", f"front end of the {side} armrest",
                          np.asarray(corner_xy[f"front_{side}"]) + (0.0, -arms), f"{surface}_front_{side}_corner", 0.04)
            s.add(f"{side}_armrest_back", f"back end of the {side} armrest",
                  np.asarray(corner_xy[f"back_{side}"]) + (0.0, -arms), front, 0.03)
    return s.build()


# -- family: articulated lamp (a base, a chain of arm joints, a shade) ------------------


def _lamp(base_width=0.5, joints=(), shade=0.3):
    """joints rows: (name, text, angle, length); each is one arm segment from the previous joint."""
    s = _Sketch()
    s.add("base_centre", "centre of the lamp base", (0.0, 0.0))
    for side, sx in (("left", -1), ("right", 1)):
        s.add(f"base_{side}_edge", f"{side} edge of the lamp base", (sx * base_width / 2, 0.03), 0, 0.01, weight=1.8)
    parent, xy = 0, np.zeros(2)
    for name, text, angle, length in joints:
        xy = xy + length * _unit(angle)
        parent = s.add(name, text, xy, parent, 0.3, weight=1.2)
    for name, text, offset in (("shade_front_rim", "front edge of the lamp shade rim", (shade * 0.9, shade)),
                               ("shade_back_rim", "back edge of the lamp shade rim", (-shade * 0.4, shade * 1.1))):
        s.add(name, text, xy + offset, parent, 0.08)
    s.link("shade_front_rim", "shade_back_rim")
    s.fill(parent, "shade_front_rim", "shade_back_rim")
    return s.build()


# -- family: shelf (a frame with horizontal boards) -----------------------------------


def _shelf(levels=4, width=0.9, height=1.6, foot=0.0):
    s = _Sketch()
    rows = [("top", "top")]
    rows += [(f"shelf{i}", f"{_ORDINALS[i - 1]} shelf board from the top") for i in range(1, levels - 1)]
    rows.append(("bottom", "bottom"))
    grid = []
    for r, (key, text) in enumerate(rows):
        y = -height / 2 + height * r / (len(rows) - 1)
        pair = []
        for side, sx in (("left", -1), ("right", 1)):
            name = f"{key}_{side}_corner" if key in ("top", "bottom") else f"{key}_{side}_end"
            label = f"{text} {side} corner of the frame" if key in ("top", "bottom") else f"{side} end of the {text}"
            parent = None if not grid and not pair else (pair[0] if pair else grid[-1][0 if side == "left" else 1])
            pair.append(s.add(name, label, (sx * width / 2, y), parent, 0.01, edge=False))
        s.link(*pair, weight=0.9)
        if grid:
            s.link(grid[-1][0], pair[0], weight=1.4)
            s.link(grid[-1][1], pair[1], weight=1.4)
        grid.append(pair)
    s.fill(grid[0][0], grid[0][1], grid[-1][1], grid[-1][0])
    if foot:
        for side, idx in (("left", 0), ("right", 1)):
            corner = grid[-1][idx]
            s.add(f"{side}_foot", f"{side} foot under the frame", s.xy[corner] + (0.0, foot), corner, 0.02)
    return s.build()


# -- family: cycle (side view, facing right) ------------------------------------------


def _cycle(wheel_r=0.35, rear_r=None, wheelbase=1.1, seat=True, pedals=True, deck=False, rear_pair=False,
           bar_height=0.85):
    rear_r = wheel_r if rear_r is None else rear_r
    s = _Sketch()
    crank_xy = (-0.05, 0.05) if pedals else (0.0, wheel_r * 0.4)
    s.add("pedal_crank" if pedals else "deck_centre",
          "crank axle between the pedals" if pedals else "middle of the standing deck", crank_xy)
    front_hub = s.add("front_wheel_hub", "hub at the centre of the front wheel", (wheelbase / 2, 0.0), 0, 0.02,
                      weight=1.2)
    s.add("front_wheel_ground_contact", "point where the front wheel touches the ground",
          (wheelbase / 2, wheel_r), front_hub, 0.02, weight=0.5)
    s.ring(front_hub, "front_wheel_ground_contact")
    rear_sides = (("rear_left", "rear left", 0.12, -0.1), ("rear_right", "rear right", -0.12, 0.1)) if rear_pair \
        else (("rear", "rear", 0.0, 0.0),)
    rear_hubs = []
    for key, text, ox, oy in rear_sides:
        hub_xy = (-wheelbase / 2 + ox, (wheel_r - rear_r) + oy)
        hub = s.add(f"{key}_wheel_hub", f"hub at the centre of the {text} wheel", hub_xy, 0, 0.02, weight=1.2)
        s.add(f"{key}_wheel_ground_contact", f"point where the {text} wheel touches the ground",
              (hub_xy[0], hub_xy[1] + rear_r), hub, 0.02, weight=0.5)
        s.ring(hub, f"{key}_wheel_ground_contact")
        rear_hubs.append(hub)
    if rear_pair:
        s.link(*rear_hubs, weight=1.2)
    head = s.add("head_tube_top", "top of the steering head tube", (wheelbase / 2 - 0.12, -bar_height * 0.65),
                 front_hub, 0.04, weight=1.2)
    s.add("handlebar_grip", "end of the handlebar grip", (wheelbase / 2 - 0.22, -bar_height), head, 0.12)
    s.link(0, head, weight=1.2)
    if deck:
        deck_y = wheel_r * 0.4
        s.add("deck_rear_end", "rear end of the standing deck", (-wheelbase / 2 + 0.1, deck_y), 0, 0.02, weight=1.6)
        s.add("deck_front_end", "front end of the standing deck", (wheelbase / 2 - 0.2, deck_y), 0, 0.02, weight=1.6)
    if pedals:
        s.add("pedal", "centre of the pedal", (-0.05 + 0.18, 0.05 + 0.12), 0, 0.6, weight=0.8)
    if seat:
        top = s.add("seat_top", "top of the seat", (-0.25, -0.62), 0, 0.03, weight=1.2)
        for hub in rear_hubs:
            s.link(hub, 0, top, weight=1.2)
        s.link(top, head, weight=1.2)
    else:
        for hub in rear_hubs:
            s.link(hub, 0, weight=1.2)
    return s.build()


# -- family: motor vehicle (side view, facing right) ----------------------------------


def _motor(hood=0.5, hood_h=0.45, cab=0.6, cab_h=0.9, cargo=0.0, cargo_h=0.0, wheels=((0.3, 0.22), (1.0, 0.22)),
           chassis=0.2, exhaust=False):
    """wheels rows: (distance behind the front bumper, radius)."""
    s = _Sketch()
    s.add("front_bumper_bottom", "bottom of the front bumper", (0.0, 0.0))
    outline = [0]
    for name, text, x, y in (
        ("front_bumper_top", "top front corner of the bonnet above the bumper", 0.0, -hood_h),
        ("windshield_bottom", "bottom edge of the windshield", -hood, -hood_h - 0.05),
        ("windshield_top", "top edge of the windshield at the roof", -hood - 0.15 * cab, -cab_h),
        ("cab_roof_rear", "rear corner of the cab roof", -hood - cab, -cab_h),
    ):
        outline.append(s.add(name, text, (x, y), outline[-1], 0.01, weight=1.2))
    if cargo:
        x0 = -hood - cab - 0.05
        outline.append(s.add("cargo_top_front", "front top corner of the cargo box", (x0, -cargo_h), outline[-1], 0.01,
                             weight=1.2))
        outline.append(s.add("cargo_top_rear", "rear top corner of the cargo box", (x0 - cargo, -cargo_h), outline[-1],
                             0.01, weight=1.2))
    rear_x = -hood - cab - (cargo + 0.05 if cargo else 0.0)
    outline.append(s.add("rear_bottom", "bottom rear corner of the body", (rear_x, 0.0), outline[-1], 0.01, weight=1.2))
    s.link(outline[-1], 0, weight=1.2)
    s.fill(*outline)
    for w, (back, radius) in enumerate(wheels):
        hub = s.add(f"wheel{w + 1}_hub", f"hub of the {_ORDINALS[w]} wheel from the front", (-back, chassis), 0, 0.01,
                    edge=False)
        s.add(f"wheel{w + 1}_ground_contact", f"point where the {_ORDINALS[w]} wheel from the front touches the ground",
              (-back, chassis + radius), hub, 0.01, weight=0.5)
        s.ring(hub, f"wheel{w + 1}_ground_contact")
    if exhaust:
        s.add("exhaust_pipe_top", "top of the exhaust pipe", (-hood * 0.6, -hood_h - 0.45), "windshield_bottom", 0.04)
    return s.build()


_FAMILIES = {
    "radial": _radial,
    "limbed": _limbed,
    "biped": _biped,
    "face": _face,
    "hand": _hand,
    "garment": _garment,
    "seat": _seat,
    "lamp": _lamp,
    "shelf": _shelf,
    "cycle": _cycle,
    "motor": _motor,
}


class _CategorySpec(NamedTuple):
    name: str
    supercategory: str
    family: str
    params: dict


# Category ids are 1-based positions in this table. Names are invented and never equal
# an MP-100 category name, so demo results cannot be mistaken for MP-100 ones.
_CATEGORY_TABLE: tuple[_CategorySpec, ...] = (
    # animal_body
    _CategorySpec("starfish", "animal_body", "radial", dict(arms=5, segments=2)),
    _CategorySpec("brittle_star", "animal_body", "radial", dict(arms=5, segments=3, jitter=0.35, weight=1.0)),
    _CategorySpec("octopus", "animal_body", "radial", dict(
        arms=8, segments=2, limb="tentacle", hub="centre where the tentacles meet", spread=(15.0, 165.0),
        counting="counting from the right", extras=(("mantle_top", "top of the head mantle", 0.0, -0.75),))),
    _CategorySpec("sea_anemone", "animal_body", "radial", dict(
        arms=10, segments=1, limb="tentacle", hub="mouth disc where the tentacles meet", spread=(-165.0, -15.0),
        counting="counting from the left", extras=(("stalk_foot", "foot at the bottom of the stalk", 0.0, 0.8),))),
    _CategorySpec("spider_body", "animal_body", "limbed", dict(
        spine=(("fangs", "fangs at the front of the head", 0.0, -0.5, 0.05),
               ("cephalothorax", "centre of the cephalothorax", 0.0, -0.2, 0.0),
               ("pedicel", "narrow waist between the two body parts", 0.0, 0.05, 0.1),
               ("abdomen_tip", "rear tip of the abdomen", 0.0, 0.6, 0.12)),
        root=1, limbs=tuple(_Limb("cephalothorax", f"leg{i + 1}", f"{_ORDINALS[i]} leg", _LEG2, angle=a,
                                  segment=(0.4, 0.45), bend=45.0, start=(0.08, 0.0), jitter=0.18, weight=0.8)
                            for i, a in enumerate((-75.0, -40.0, -10.0, 20.0))))),
    _CategorySpec("ant_body", "animal_body", "limbed", dict(
        spine=(("mandibles", "tips of the mandibles", 0.0, -0.95, 0.03),
               ("head", "centre of the head", 0.0, -0.75, 0.08),
               ("thorax", "centre of the thorax", 0.0, -0.3, 0.0),
               ("waist", "narrow waist behind the thorax", 0.0, 0.0, 0.1),
               ("abdomen_tip", "rear tip of the abdomen", 0.0, 0.75, 0.12)),
        root=2, limbs=(
            _Limb("head", "antenna", "antenna", (("bend", "bend"), ("tip", "tip")), angle=-80.0, segment=(0.25, 0.3),
                  bend=40.0, start=(0.05, 0.0), jitter=0.25, weight=0.6),
            *(_Limb("thorax", f"{p}_leg", f"{p} leg", _LEG2, angle=a, segment=(0.35, 0.4), bend=40.0, jitter=0.18,
                    weight=0.8) for p, a in (("front", -40.0), ("middle", 0.0), ("hind", 35.0)))))),
    _CategorySpec("centipede_body", "animal_body", "limbed", dict(
        spine=tuple((f"segment{i}" if i else "head", f"{_ORDINALS[i - 1]} body segment behind the head" if i
                     else "front of the head", 0.0, -0.9 + 0.3 * i, 0.18 if i else 0.05) for i in range(7)),
        root=3, limbs=(
            _Limb("head", "antenna", "antenna", _TIP, angle=-55.0, segment=0.35, jitter=0.25, weight=0.6),
            *(_Limb(f"segment{i}", f"leg{i}", f"leg on the {_ORDINALS[i - 1]} segment", (("foot", "foot"),),
                    angle=15.0, segment=0.3, start=(0.06, 0.0), jitter=0.2, weight=0.7) for i in range(1, 7))))),
    _CategorySpec("scorpion_body", "animal_body", "limbed", dict(
        spine=(("head", "front of the head", 0.0, -0.5, 0.03), ("body_centre", "centre of the body", 0.0, -0.2, 0.0),
               ("body_rear", "rear end of the body", 0.0, 0.15, 0.05),
               ("tail_joint1", "first joint of the tail", 0.0, 0.4, 0.2),
               ("tail_joint2", "second joint of the tail", 0.0, 0.62, 0.25),
               ("tail_joint3", "third joint of the tail", 0.0, 0.8, 0.3),
               ("stinger", "tip of the stinger", 0.0, 0.95, 0.3)),
        root=1, limbs=(
            _Limb("head", "claw", "claw", (("elbow", "elbow"), ("pincer", "pincer")), angle=-40.0, segment=(0.3, 0.3),
                  bend=-45.0, start=(0.06, 0.0), jitter=0.2, weight=1.2),
            *(_Limb("body_centre", f"leg{i + 1}", f"{_ORDINALS[i]} walking leg", (("foot", "foot"),), angle=a,
                    segment=0.42, start=(0.1, 0.0), jitter=0.15, weight=0.7)
              for i, a in enumerate((-15.0, 15.0, 45.0)))))),
    _CategorySpec("lizard_body", "animal_body", "limbed", dict(
        spine=(("snout", "tip of the snout", 0.0, -0.95, 0.05),
               ("head", "top of the head between the eyes", 0.0, -0.75, 0.1),
               ("shoulders", "back between the shoulders", 0.0, -0.5, 0.12),
               ("mid_back", "middle of the back", 0.0, -0.15, 0.0),
               ("hips", "back between the hips", 0.0, 0.15, 0.1), ("tail_base", "base of the tail", 0.0, 0.35, 0.15),
               ("tail_middle", "middle of the tail", 0.0, 0.65, 0.25), ("tail_tip", "tip of the tail", 0.0, 0.95, 0.3)),
        root=3, limbs=(
            _Limb("shoulders", "front_leg", "front leg", (("elbow", "elbow"), ("foot", "foot")), angle=-20.0,
                  segment=(0.25, 0.22), bend=-60.0, start=(0.08, 0.0), jitter=0.25),
            _Limb("hips", "back_leg", "back leg", (("knee", "knee"), ("foot", "foot")), angle=25.0,
                  segment=(0.25, 0.22), bend=60.0, start=(0.08, 0.0), jitter=0.25)))),
    _CategorySpec("tortoise_body", "animal_body", "limbed", dict(
        spine=(("head", "tip of the head", 0.0, -0.8, 0.25),
               ("neck_base", "base of the neck at the shell", 0.0, -0.5, 0.02),
               ("shell_centre", "centre of the shell", 0.0, 0.0, 0.0),
               ("shell_rear", "rear edge of the shell", 0.0, 0.5, 0.02),
               ("tail_tip", "tip of the tail", 0.0, 0.7, 0.25)),
        root=2, body_weight=1.4, limbs=(
            _Limb("shell_centre", "shell_edge", "shell edge",
                  (("{side}_shell_edge", "{side} edge of the shell at its widest"),), segment=0.0, start=(0.5, 0.0)),
            _Limb("neck_base", "front_leg", "front leg", (("foot", "foot"),), angle=-30.0, segment=0.3,
                  start=(0.3, 0.05), jitter=0.25, weight=1.6),
            _Limb("shell_rear", "back_leg", "back leg", (("foot", "foot"),), angle=40.0, segment=0.25,
                  start=(0.3, -0.1), jitter=0.25, weight=1.6)),
        fills=((("neck_base", "left_shell_edge", "shell_rear", "right_shell_edge"), _BODY),))),
    _CategorySpec("dragon_body", "animal_body", "limbed", dict(
        spine=(("snout", "tip of the snout", 0.0, -0.95, 0.05),
               ("head", "top of the head between the horns", 0.0, -0.75, 0.1),
               ("shoulders", "back between the shoulders", 0.0, -0.5, 0.1),
               ("mid_back", "middle of the back", 0.0, -0.15, 0.0),
               ("hips", "back between the hips", 0.0, 0.15, 0.1),
               ("tail_middle", "middle of the tail", 0.0, 0.55, 0.25),
               ("tail_tip", "tip of the tail", 0.0, 0.95, 0.3)),
        root=3, limbs=(
            _Limb("head", "horn", "horn", _TIP, angle=-70.0, segment=0.2, start=(0.05, 0.0), jitter=0.1, weight=0.8),
            _Limb("shoulders", "wing", "wing", (("wrist", "wrist"), ("tip", "tip")), angle=-25.0, segment=(0.45, 0.45),
                  bend=35.0, start=(0.05, 0.0), jitter=0.2, weight=0.8),
            _Limb("shoulders", "front_leg", "front leg", (("elbow", "elbow"), ("foot", "foot")), angle=10.0,
                  segment=(0.22, 0.2), bend=-50.0, start=(0.08, 0.05), jitter=0.2),
            _Limb("hips", "back_leg", "back leg", (("knee", "knee"), ("foot", "foot")), angle=30.0,
                  segment=(0.25, 0.22), bend=50.0, start=(0.08, 0.0), jitter=0.2)),
        fills=((("shoulders", "left_wing_wrist", "left_wing_tip", "mid_back"), _BODY),
               (("shoulders", "right_wing_wrist", "right_wing_tip", "mid_back"), _BODY)))),
    # animal_face
    _CategorySpec("owl_face", "animal_face", "face", dict(
        outline=6, eyes=4, nose=2, mouth=0, ears="tuft", nose_word="beak", width=0.8, height=0.85, eye_dx=0.33)),
    _CategorySpec("frog_face", "animal_face", "face", dict(
        outline=4, eyes=2, nose=1, mouth=2, nose_word="snout", width=1.0, height=0.55, eye_y=-0.45, eye_dx=0.45,
        mouth_y=0.3, mouth_w=0.7)),
    _CategorySpec("koala_face", "animal_face", "face", dict(
        outline=4, eyes=1, nose=4, mouth=2, ears="round", width=0.7, height=0.75, mouth_y=0.4, mouth_w=0.15)),
    _CategorySpec("lemur_face", "animal_face", "face", dict(
        outline=6, eyes=2, nose=2, mouth=0, ears="pointed", nose_word="snout", width=0.6, height=0.85)),
    _CategorySpec("meerkat_face", "animal_face", "face", dict(
        outline=8, eyes=1, nose=1, mouth=2, ears="round", whiskers=True, width=0.55, height=0.9, mouth_w=0.12)),
    # human_body
    _CategorySpec("dancer", "human_body", "biped", dict(
        head=("nose", "eyes", "ears"), arm_angle=-20.0, arm_bend=-40.0, leg_angle=75.0, leg_bend=10.0, jitter=0.35)),
    _CategorySpec("stick_figure", "human_body", "biped", dict(
        head=("head_top",), arms=("elbow", "hand"), legs=("knee", "foot"), arm_angle=45.0, leg_angle=70.0,
        body_weight=1.0)),
    _CategorySpec("robot_body", "human_body", "biped", dict(
        head=("head_top", "visor", "antennae"), arms=("shoulder", "elbow", "gripper"), arm_angle=80.0, arm_bend=0.0,
        leg_angle=90.0, leg_bend=0.0, jitter=0.15, body_weight=2.6)),
    _CategorySpec("acrobat", "human_body", "biped", dict(
        head=("head_top", "nose"), arms=("shoulder", "elbow", "wrist", "hand"), legs=("hip", "knee", "ankle", "toe"),
        arm_angle=-60.0, arm_bend=-10.0, leg_angle=40.0, leg_bend=15.0, jitter=0.4)),
    _CategorySpec("astronaut_body", "human_body", "biped", dict(
        head=("head_top", "visor"), arms=("shoulder", "elbow", "hand"), legs=("hip", "knee", "ankle", "toe"),
        arm_angle=30.0, arm_bend=30.0, leg_angle=80.0, jitter=0.25, body_weight=3.0)),
    # human_face
    _CategorySpec("cartoon_face", "human_face", "face", dict(
        outline=8, brows=2, eyes=2, nose=1, mouth=4, ears="round")),
    _CategorySpec("clown_face", "human_face", "face", dict(outline=6, brows=3, eyes=1, nose=1, mouth=4, mouth_w=0.38,
                                                           width=0.85)),
    _CategorySpec("mask_face", "human_face", "face", dict(outline=4, eyes=4, nose=2, mouth=0, width=0.8, height=0.7,
                                                          eye_dx=0.35)),
    _CategorySpec("doll_face", "human_face", "face", dict(outline=0, brows=3, eyes=4, nose=1, mouth=3)),
    # human_hand
    _CategorySpec("glove", "human_hand", "hand", dict(joints=3, cuff=True)),
    _CategorySpec("mitten", "human_hand", "hand", dict(fingers=("thumb", "mitt"), joints=2, length=0.6, cuff=True,
                                                       finger_weight=3.5)),
    _CategorySpec("cartoon_hand", "human_hand", "hand", dict(fingers=("thumb", "index", "middle", "ring"), joints=3,
                                                             palm=False, spread=20.0, finger_weight=1.8)),
    _CategorySpec("pointing_hand", "human_hand", "hand", dict(
        joints=4, palm=False, curl={"thumb": 0.3, "middle": 0.8, "ring": 0.85, "little": 0.9})),
    # clothes
    _CategorySpec("poncho", "clothes", "garment", dict(
        armpit=False, waist=False, length=0.45, flare=0.75, shoulder_x=0.55)),
    _CategorySpec("kimono", "clothes", "garment", dict(sleeve="wide", collar="v", length=1.1, flare=0.08)),
    _CategorySpec("tank_top", "clothes", "garment", dict(waist=False, length=0.45, shoulder_x=0.32)),
    _CategorySpec("hoodie", "clothes", "garment", dict(sleeve="long", collar="high", length=0.45, hood=True)),
    _CategorySpec("overalls", "clothes", "garment", dict(legs=True, shoulder_x=0.36)),
    # furniture
    _CategorySpec("bar_stool", "furniture", "seat", dict(width=0.55, depth=0.35, leg=1.2, back=0.35, pedestal_feet=4)),
    _CategorySpec("bench", "furniture", "seat", dict(width=1.8, depth=0.4, leg=0.45, back=0.5)),
    _CategorySpec("throne", "furniture", "seat", dict(width=0.85, depth=0.5, leg=0.45, back=1.3, arms=0.45)),
    _CategorySpec("desk", "furniture", "seat", dict(width=1.6, depth=0.7, leg=0.9, surface="top")),
    _CategorySpec("desk_lamp", "furniture", "lamp", dict(joints=(
        ("lower_arm_top", "elbow joint between the lower and the upper arm", -70.0, 0.8),
        ("upper_arm_tip", "head joint at the end of the upper arm", -15.0, 0.7)))),
    _CategorySpec("bookshelf", "furniture", "shelf", dict(levels=5, width=0.9, height=1.6, foot=0.1)),
    # vehicle
    _CategorySpec("bicycle", "vehicle", "cycle", dict()),
    _CategorySpec("tricycle", "vehicle", "cycle", dict(wheel_r=0.4, rear_r=0.22, wheelbase=0.95, rear_pair=True)),
    _CategorySpec("scooter", "vehicle", "cycle", dict(wheel_r=0.15, wheelbase=1.0, seat=False, pedals=False, deck=True,
                                                      bar_height=1.1)),
    _CategorySpec("truck", "vehicle", "motor", dict(hood=0.45, hood_h=0.5, cab=0.55, cab_h=0.95, cargo=1.5,
                                                    cargo_h=1.05,
                                                    wheels=((0.3, 0.22), (1.65, 0.22), (2.15, 0.22)))),
    _CategorySpec("tractor", "vehicle", "motor", dict(hood=0.8, hood_h=0.5, cab=0.6, cab_h=1.15,
                                                      wheels=((0.3, 0.22), (1.3, 0.45)), chassis=0.05, exhaust=True)),
)


# Species families. MP-100 draws three quarters of its categories from three families
# whose members share one keypoint definition (35 AP-10K quadrupeds, 8 CUB birds, 30
# animal faces), so most unseen test categories have siblings among the training
# ones. Here each species shares its base category's keypoints, descriptions and
# skeleton, and differs in proportions (`_proportioned`) and in look (its own colours).
# Their ids follow the table's; names are invented, as above.
_SPECIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("lizard_body", (
        "gecko_body", "iguana_body", "monitor_lizard_body", "chameleon_body", "skink_body", "newt_body",
        "salamander_body", "axolotl_body", "crocodile_body", "alligator_body", "caiman_body", "gharial_body",
        "komodo_body", "basilisk_body", "agama_body", "anole_body", "tegu_body", "gila_monster_body",
        "horned_lizard_body", "frilled_lizard_body", "bearded_dragon_body", "tuatara_body", "mudpuppy_body",
        "hellbender_body")),
    ("dragon_body", ("wyvern_body", "drake_body", "pterosaur_body", "gargoyle_body", "flying_lizard_body",
                     "draco_body")),
    ("koala_face", (
        "wombat_face", "sloth_face", "hedgehog_face", "mole_face", "badger_face", "possum_face", "tarsier_face",
        "marmot_face", "lynx_face", "ocelot_face", "tapir_face", "okapi_face", "kudu_face", "ibex_face", "yak_face",
        "llama_face", "vole_face", "shrew_face", "dormouse_face", "jerboa_face", "pangolin_face", "aardvark_face",
        "armadillo_face", "numbat_face", "bilby_face")),
)


def _proportioned(t: _Template, species: str) -> _Template:
    """`t` with a species' own proportions, drawn once from its name.

    Each bone (the offset of a keypoint from its parent) is scaled and turned,
    mirrored pairs alike so the species stays left-right symmetric, and the whole
    layout is stretched along one axis. The changes (about 15% per bone, up to 15
    degrees, up to 20% aspect) exceed the per-instance pose jitter of `_pose`, so
    species differ in shape, not only in colour.
    """
    rng = np.random.default_rng(zlib.crc32(species.encode("utf-8")))
    bone_change: dict[str, tuple[float, float]] = {}
    rest = t.rest.copy()
    for k, p in enumerate(t.parents):
        if p < 0:
            continue
        side, _, bone = t.keypoints[k].partition("_")
        if side not in ("left", "right"):
            bone = t.keypoints[k]
        if bone not in bone_change:
            bone_change[bone] = (float(np.clip(np.exp(rng.normal(0.0, 0.15)), 0.7, 1.4)),
                                 math.radians(rng.uniform(-15.0, 15.0)))
        scale, turn = bone_change[bone]
        turn = -turn if side == "right" else turn
        c, s = math.cos(turn), math.sin(turn)
        v = (t.rest[k] - t.rest[p]) * scale
        rest[k] = rest[p] + (c * v[0] - s * v[1], s * v[0] + c * v[1])
    aspect = rng.uniform(-0.2, 0.2)
    rest = rest * np.exp([aspect, -aspect])
    return replace(t, rest=_canonical(rest))


@functools.lru_cache(maxsize=1)
def _category_templates() -> tuple[tuple[int, _CategorySpec, _Template], ...]:
    entries = [(cid, spec, _FAMILIES[spec.family](**spec.params))
               for cid, spec in enumerate(_CATEGORY_TABLE, start=1)]
    base = {spec.name: (spec, t) for _, spec, t in entries}
    for base_name, species in _SPECIES:
        spec, t = base[base_name]
        entries += [(len(entries) + i, spec._replace(name=name), _proportioned(t, name))
                    for i, name in enumerate(species, start=1)]
    return tuple(entries)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------

_SHIFT = 4  # cv2 fixed-point bits, so keypoints are drawn at sub-pixel positions
_ONE = 1 << _SHIFT


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def _fx(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


@dataclass(frozen=True)
class _CategoryStyle:
    hue: float
    fill_hue: float
    keypoint_hues: np.ndarray


def _category_style(rng: np.random.Generator, k: int) -> _CategoryStyle:
    hue = rng.random()
    # Keypoint colours follow the golden-ratio hue walk, so neighbouring keypoints differ
    # and the same keypoint has (almost) the same colour in every instance.
    return _CategoryStyle(hue, hue + rng.uniform(-0.15, 0.15), (rng.random() + 0.618034 * np.arange(k)) % 1.0)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    c0 = np.array(_rgb(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.25, 0.9)), np.float32)
    c1 = np.array(_rgb(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.25, 0.9)), np.float32)
    phi = rng.uniform(0.0, 2 * math.pi)
    xs, ys = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    ramp = np.cos(phi) * xs[None, :] + np.sin(phi) * ys[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    img = c0 + ramp[..., None] * (c1 - c0)
    img += rng.standard_normal((height, width, 3), dtype=np.float32) * np.float32(rng.uniform(3.0, 12.0))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 6))):
        _distractor(rng, img)
    return img


def _distractor(rng: np.random.Generator, img: np.ndarray) -> None:
    height, width = img.shape[:2]
    colour = _rgb(rng.random(), rng.uniform(0.15, 0.8), rng.uniform(0.2, 0.95))
    centre = rng.uniform((0, 0), (width, height))
    size = rng.uniform(0.05, 0.22) * min(width, height)
    kind = int(rng.integers(4))
    if kind == 0:
        cv2.circle(img, tuple(_fx(centre)), int(max(size, 6) * _ONE), colour, -1, cv2.LINE_AA, _SHIFT)
    elif kind == 1:
        box = cv2.boxPoints((tuple(centre), (size * 2, size * rng.uniform(0.4, 1.5)), rng.uniform(0, 180)))
        cv2.fillPoly(img, [_fx(box)], colour, cv2.LINE_AA, _SHIFT)
    elif kind == 2:
        end = centre + size * 2 * _unit(rng.uniform(0, 360))
        cv2.line(img, tuple(_fx(centre)), tuple(_fx(end)), colour, int(rng.integers(2, 6)), cv2.LINE_AA, _SHIFT)
    else:
        tri = centre + rng.uniform(-size, size, (3, 2))
        cv2.fillPoly(img, [_fx(tri)], colour, cv2.LINE_AA, _SHIFT)


def _pose(t: _Template, rng: np.random.Generator) -> np.ndarray:
    """Rest pose with joint-angle jitter propagated down the kinematic tree."""
    delta = rng.standard_normal(len(t.parents)) * t.jitter
    stretch = np.clip(1.0 + 0.06 * rng.standard_normal(len(t.parents)), 0.85, 1.15)
    angle = np.zeros(len(t.parents))
    pos = t.rest.copy()
    for k, p in enumerate(t.parents):
        if p < 0:
            continue
        angle[k] = angle[p] + delta[k]
        c, s = math.cos(angle[k]), math.sin(angle[k])
        v = (t.rest[k] - t.rest[p]) * stretch[k]
        pos[k] = pos[p] + (c * v[0] - s * v[1], s * v[0] + c * v[1])
    # Anisotropic stretch, then a rotation within +-40 degrees (no flips: they would swap left and right).
    pos = pos * np.exp(0.08 * rng.standard_normal(2))
    theta = math.radians(rng.uniform(-40.0, 40.0))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return pos @ rot.T


def _place(rng, t: _Template, region) -> tuple[np.ndarray, float]:
    x0, y0, x1, y1 = region
    pts = _pose(t, rng)
    lo, hi = pts.min(0), pts.max(0)
    extent = float((hi - lo).max())
    target = rng.uniform(0.55, 0.9) * min(x1 - x0, y1 - y0)
    scale = target / extent
    size = (hi - lo) * scale
    centre = np.empty(2)
    for d, (a, b) in enumerate(((x0, x1), (y0, y1))):
        margin = 0.06 * size[d]  # allow a little overflow: keypoints outside the image get v=0
        low, high = a + size[d] / 2 - margin, b - size[d] / 2 + margin
        centre[d] = rng.uniform(low, high) if high > low else (a + b) / 2
    return (pts - (lo + hi) / 2) * scale + centre, scale


def _closed_spline(points: np.ndarray, samples: int = 10) -> np.ndarray:
    """Closed Catmull-Rom curve through `points` (so a 4-point face outline is an oval, not a diamond)."""
    p0, p1, p2, p3 = (np.roll(points, -i, axis=0)[:, None, :] for i in (-1, 0, 1, 2))
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    curve = 0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
    return curve.reshape(-1, 2)


def _draw_instance(img, rng, t: _Template, style: _CategoryStyle, xy: np.ndarray, scale: float, v1: np.ndarray):
    limb = _rgb(style.hue + 0.03 * rng.standard_normal(), rng.uniform(0.55, 0.95), rng.uniform(0.3, 0.95))
    body = _rgb(style.fill_hue + 0.03 * rng.standard_normal(), rng.uniform(0.2, 0.55), rng.uniform(0.55, 0.95))
    tones = {_BODY: body, _LIGHT: _rgb(0, 0, rng.uniform(0.85, 1.0)), _DARK: _rgb(0, 0, rng.uniform(0.05, 0.2))}
    thickness = max(2.0, scale * 0.045 * rng.uniform(0.75, 1.3))
    radius = max(2, int(round(scale * 0.045)))
    pts = _fx(xy)
    weight = dict(zip(t.skeleton, t.edge_weights))
    outlines = []
    for polygon, tone, smooth in t.fills:
        ids = list(polygon)
        if smooth:
            curve = _fx(_closed_spline(xy[ids]))
            cv2.fillPoly(img, [curve], tones[tone], cv2.LINE_AA, _SHIFT)
            w = max((weight.get((min(a, b), max(a, b)), 0.0) for a, b in zip(ids, ids[1:] + ids[:1])))
            if w:
                outlines.append((curve, w))
        else:
            cv2.fillPoly(img, [pts[ids]], tones[tone], cv2.LINE_AA, _SHIFT)
    for curve, w in outlines:
        cv2.polylines(img, [curve], True, limb, max(1, int(round(thickness * w))), cv2.LINE_AA, _SHIFT)
    for centre, rim in t.rings:
        r = float(np.linalg.norm(xy[rim] - xy[centre]))
        tyre = max(2, int(thickness * 1.2))
        cv2.circle(img, tuple(pts[centre]), int(r * _ONE), tones[_DARK], tyre, cv2.LINE_AA, _SHIFT)
    for (a, b), w, straight in zip(t.skeleton, t.edge_weights, t.straight):
        if straight:
            cv2.line(img, tuple(pts[a]), tuple(pts[b]), limb, max(1, int(round(thickness * w))), cv2.LINE_AA, _SHIFT)
    for k in np.flatnonzero(~v1):
        colour = _rgb(style.keypoint_hues[k] + 0.01 * rng.standard_normal(), 0.9, rng.uniform(0.85, 1.0))
        cv2.circle(img, tuple(pts[k]), (radius + 1) * _ONE, (20, 20, 20), -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(img, tuple(pts[k]), radius * _ONE, colour, -1, cv2.LINE_AA, _SHIFT)
    return thickness + 2 * radius


def _drawn_extent(t: _Template, xy: np.ndarray) -> np.ndarray:
    """Keypoints plus the points of wheels and smooth outlines, for the tight bbox."""
    parts = [xy]
    for centre, rim in t.rings:
        r = float(np.linalg.norm(xy[rim] - xy[centre]))
        parts.append(xy[centre] + [[-r, -r], [r, r]])
    parts += [_closed_spline(xy[list(ids)]) for ids, _, smooth in t.fills if smooth]
    return np.concatenate(parts)


def _occlude(img, mask, rng, xy: np.ndarray, inside: np.ndarray, extent: float) -> None:
    anchor = xy[rng.choice(np.flatnonzero(inside))] + rng.normal(0.0, 0.1 * extent, 2)
    axes = rng.uniform(0.1, 0.22, 2) * extent
    colour = _rgb(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.2, 0.9))
    if rng.random() < 0.5:
        poly = _fx(cv2.boxPoints((tuple(anchor), tuple(axes * 2), rng.uniform(0, 180))))
        cv2.fillPoly(img, [poly], colour, cv2.LINE_AA, _SHIFT)
        cv2.fillPoly(mask, [poly], 1, cv2.LINE_8, _SHIFT)
    else:
        args = (tuple(_fx(anchor)), tuple(int(a) for a in _fx(axes)), rng.uniform(0, 180), 0, 360)
        cv2.ellipse(img, *args, colour, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(mask, *args, 1, -1, cv2.LINE_8, _SHIFT)


def _render_image(rng, t: _Template, style: _CategoryStyle, width: int, height: int, count: int, allow_occlusion=True):
    """Renders `count` instances of one category. Returns the image and per-instance
    (keypoints (K, 3), bbox) or None when an instance kept too few labelled keypoints."""
    img = _background(rng, width, height)
    if count == 1:
        regions = [(0.0, 0.0, float(width), float(height))]
    elif width >= height:
        regions = [(0.0, 0.0, width / 2, float(height)), (width / 2, 0.0, float(width), float(height))]
    else:
        regions = [(0.0, 0.0, float(width), height / 2), (0.0, height / 2, float(width), float(height))]
    k = len(t.keypoints)
    placed = []
    for region in regions:
        xy, scale = _place(rng, t, region)
        v1 = np.zeros(k, bool)
        if allow_occlusion and rng.random() < 0.5:
            v1 = rng.random(k) < rng.uniform(0.05, 0.2)
        pad = _draw_instance(img, rng, t, style, xy, scale, v1)
        placed.append((xy, v1, pad))
    mask = np.zeros((height, width), np.uint8)
    inside_all = []
    for xy, _, _ in placed:
        inside = (xy[:, 0] >= 0) & (xy[:, 0] <= width - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= height - 1)
        inside_all.append(inside)
        if allow_occlusion and inside.any() and rng.random() < 0.4:
            _occlude(img, mask, rng, xy, inside, float(np.ptp(xy, axis=0).max()))
    results = []
    for (xy, v1, pad), inside in zip(placed, inside_all):
        xi = np.clip(np.round(xy).astype(int), 0, [width - 1, height - 1])
        covered = mask[xi[:, 1], xi[:, 0]] > 0
        # COCO convention: v=0 keypoints (occluder-covered or outside the image) carry no coordinates.
        v = np.where(inside & ~covered, np.where(v1, 1, 2), 0)
        if (v > 0).sum() < max(3, math.ceil(0.4 * k)):
            return img, None
        kps = np.concatenate([np.where(v[:, None] > 0, xy, 0.0), v[:, None]], axis=1)
        drawn = _drawn_extent(t, xy)
        lo = np.clip(drawn.min(0) - pad / 2, 0, [width, height])
        hi = np.clip(drawn.max(0) + pad / 2, 0, [width, height])
        if (hi - lo).min() < 4:  # keep the box non-degenerate (MP-100 loaders drop degenerate boxes)
            return img, None
        results.append((kps, [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]))
    return img, results


def _render_category(root: Path, cid: int, spec: _CategorySpec, t: _Template, seed: int, n_instances: int):
    rng = np.random.default_rng([seed, cid])
    style = _category_style(rng, len(t.keypoints))
    folder = f"demo_{spec.name}"
    (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    while len(annotations) < n_instances:
        count = 2 if n_instances - len(annotations) >= 2 and rng.random() < 0.07 else 1
        width, height = (int(v) for v in rng.integers(160, 225, 2))
        for attempt in range(20):
            # After repeated failures drop occlusion, so a category can always be rendered.
            img, results = _render_image(rng, t, style, width, height, count, allow_occlusion=attempt < 10)
            if results is not None:
                break
        else:
            raise RuntimeError(f"demo category {spec.name!r}: could not place an instance")
        image_id = cid * 10**6 + len(images)
        file_name = f"{folder}/{len(images):06d}.jpg"
        Image.fromarray(img).save(root / "images" / file_name, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for kps, bbox in results:
            bbox = [round(b, 2) for b in bbox]
            annotations.append({
                "id": cid * 10**6 + len(annotations),
                "image_id": image_id,
                "category_id": cid,
                "keypoints": [round(float(x), 2) if j % 3 < 2 else float(x) for j, x in enumerate(kps.ravel())],
                "num_keypoints": int((kps[:, 2] > 0).sum()),
                "bbox": bbox,
                "area": round(bbox[2] * bbox[3], 2),
                "iscrowd": 0,
            })
    return images, annotations


# --------------------------------------------------------------------------------------
# Splits and files
# --------------------------------------------------------------------------------------


def _assign_splits(supercategories: dict[int, str], seed: int) -> dict[int, dict[str, list[int]]]:
    """Five splits; every category is a test category in exactly one (as in MP-100)."""
    rng = np.random.default_rng([seed, 0])
    shuffled = [int(c) for c in rng.permutation(sorted(supercategories))]
    # Deal supercategory-sorted categories round-robin so each test group mixes supercategories.
    dealt = sorted(shuffled, key=lambda c: SUPERCATEGORIES.index(supercategories[c]))
    groups = [sorted(dealt[g::NUM_SPLITS]) for g in range(NUM_SPLITS)]
    splits = {}
    for k, test in enumerate(groups, start=1):
        rest = [c for c in sorted(supercategories) if c not in test]
        val = sorted(int(c) for c in rng.choice(rest, VAL_CATEGORIES_PER_SPLIT, replace=False))
        splits[k] = {"train": [c for c in rest if c not in val], "val": val, "test": test}
    return splits


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")), encoding="utf-8")


def generate_demo_dataset(root: Path, seed: int = 0, *,
                          instances_per_category: int = DEFAULT_INSTANCES_PER_CATEGORY) -> Path:
    """Writes the synthetic demo dataset in the MP-100 layout into `root`.

    Args:
        root: Output folder (created if missing; existing files with the same names are overwritten).
        seed: Seed of every random choice; the same seed gives byte-identical files.
        instances_per_category: Annotated instances per category. The default (40) keeps
            every val/test category above the 16 distinct instances an episode draws;
            tests lower it to generate quickly.

    Returns:
        `root`, holding `annotations/mp100_split{1..5}_{train,val,test}.json`,
        `images/demo_<category>/<index>.jpg`, `keypoint_texts.json` and `DEMO.json`.

    Raises:
        ConfigError: If `instances_per_category` is below 1.
    """
    if int(instances_per_category) < 1:
        raise ConfigError(f"instances_per_category must be at least 1, got {instances_per_category}")
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    entries = _category_templates()
    categories, images, annotations, texts = {}, {}, {}, {}
    for cid, spec, t in entries:
        categories[cid] = {
            "id": cid,
            "name": spec.name,
            "supercategory": spec.supercategory,
            "keypoints": list(t.keypoints),
            "skeleton": [list(e) for e in t.skeleton],
        }
        images[cid], annotations[cid] = _render_category(root, cid, spec, t, seed, int(instances_per_category))
        texts[str(cid)] = {"regular": list(t.descriptions)}
    splits = _assign_splits({cid: spec.supercategory for cid, spec, _ in entries}, seed)
    split_counts = {}
    for k, subsets in splits.items():
        split_counts[str(k)] = {}
        for subset, cids in subsets.items():
            _dump(root / "annotations" / f"mp100_split{k}_{subset}.json", {
                "info": {
                    "description": f"cape_bench synthetic demo dataset, MP-100 layout: split {k} {subset}",
                    "version": str(DEMO_VERSION),
                    "contributor": GENERATOR_NAME,
                    "seed": seed,
                },
                "images": [img for c in cids for img in images[c]],
                "annotations": [ann for c in cids for ann in annotations[c]],
                "categories": [categories[c] for c in cids],
            })
            split_counts[str(k)][subset] = {
                "categories": len(cids),
                "images": sum(len(images[c]) for c in cids),
                "annotations": sum(len(annotations[c]) for c in cids),
            }
    _dump(root / "keypoint_texts.json", texts)
    num_kpts = [len(t.keypoints) for _, _, t in entries]
    # DEMO.json is written last: its presence marks a complete dataset.
    (root / "DEMO.json").write_text(json.dumps({
        "generator": GENERATOR_NAME,
        "version": DEMO_VERSION,
        "seed": seed,
        "instances_per_category": int(instances_per_category),
        "num_categories": len(entries),
        "num_supercategories": len({spec.supercategory for _, spec, _ in entries}),
        "num_images": sum(len(v) for v in images.values()),
        "num_annotations": sum(len(v) for v in annotations.values()),
        "keypoints_per_category": {"min": min(num_kpts), "max": max(num_kpts)},
        "splits": split_counts,
    }, indent=2), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$CAPE_BENCH_CACHE` if set, else `~/.cache/cape_bench`."""
    env = os.environ.get("CAPE_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cape_bench"


def _is_complete(path: Path, seed: int) -> bool:
    try:
        meta = json.loads((path / "DEMO.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("generator") == GENERATOR_NAME
            and meta.get("version") == DEMO_VERSION and meta.get("seed") == seed)


def ensure_demo_dataset(cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Returns the cached demo dataset for `seed`, generating it on first use.

    The dataset is generated into a temporary sibling folder and moved into place with
    `os.replace` only when complete, so an interrupted run never leaves a half-written
    dataset behind, and concurrent callers end up sharing one copy.

    Args:
        cache_dir: Cache root; defaults to `default_cache_dir()`.
        seed: Generator seed.

    Returns:
        `<cache_dir>/demo-v{DEMO_VERSION}-seed{seed}`.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / f"demo-v{DEMO_VERSION}-seed{seed}"
    if _is_complete(final, seed):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache))
    try:
        generate_demo_dataset(tmp, seed=seed)
        if final.exists() and not _is_complete(final, seed):
            # An incompatible or broken copy (older generator, foreign files): move it aside and drop it.
            stale = Path(tempfile.mkdtemp(prefix=f".{final.name}.stale-", dir=cache))
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_complete(final, seed):  # lost a race to another process: use its copy
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
