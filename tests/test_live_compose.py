"""Composition: sizes, pad, paste, mirror, background; the pass-through fit."""

from __future__ import annotations

import numpy as np
import pytest

from splinecam.engines.faces.geometry import CropBox
from splinecam.live.compose import ComposeOptions, Composer, fit_picture, parse_colour, parse_size

FACE = np.zeros((256, 256, 3), np.uint8)
FACE[..., 2] = 200                         # a blue face result
FACE[:, :128, 1] = 100                     # left half a little green: shows mirroring


def picture(h=600, w=400) -> np.ndarray:
    pic = np.zeros((h, w, 3), np.uint8)
    pic[..., 0] = 180                      # a red picture
    return pic


@pytest.mark.parametrize("size", [(1280, 720), (640, 480), (720, 1280)])
@pytest.mark.parametrize("mode", ["pad", "paste"])
def test_output_size(size, mode):
    c = Composer(ComposeOptions(size, mode), picture(), CropBox(200, 250, 300))
    out = c.compose(FACE)
    assert out.shape == (size[1], size[0], 3) and out.dtype == np.uint8


def test_pad_fits_height_and_centres_over_solid_or_blurred_background():
    c = Composer(ComposeOptions((1280, 720), "pad", "#102030"), picture(), CropBox(200, 250, 300))
    out = c.compose(FACE)
    assert (c.face_rect.w, c.face_rect.h, c.face_rect.x, c.face_rect.y) == (720, 720, 280, 0)
    assert tuple(out[360, 100]) == (16, 32, 48) and tuple(out[360, 1200]) == (16, 32, 48)
    assert tuple(out[360, 900]) == (0, 0, 200)           # the face, scaled up
    blur = Composer(ComposeOptions((1280, 720), "pad", "blur"), picture(), CropBox(200, 250, 300)).compose(FACE)
    assert blur[360, 100, 0] > 100 and blur[360, 100, 2] < 20   # the avatar's (red) picture, blurred and dimmed


def test_paste_puts_the_face_back_where_it_was_cropped():
    pic = picture(600, 400)
    c = Composer(ComposeOptions((1280, 720), "paste", "black"), pic, CropBox(200, 250, 200))
    out = c.compose(FACE)
    r = c.face_rect                        # picture scaled by 720/600 = 1.2, centred: x0 = 400
    assert (r.x, r.y, r.w) == (400 + 120, 180, 240)
    assert tuple(out[r.y + r.h // 2, r.x + 3 * r.w // 4]) == (0, 0, 200)   # middle of the face: the result
    assert tuple(out[30, 640]) == (180, 0, 0)          # the picture outside the crop is untouched
    assert tuple(out[360, 100]) == (0, 0, 0)            # outside the picture: the background
    edge = out[r.y + r.h // 2, r.x + 1]                 # feathered edge: a blend
    assert 0 < edge[0] < 180 and 0 < edge[2] < 200


def test_mirror_flips_left_right():
    c = Composer(ComposeOptions((1280, 720), "pad"), picture(), CropBox(200, 250, 300))
    np.testing.assert_array_equal(c.compose(FACE, mirror=True), c.compose(FACE)[:, ::-1])


def test_fit_picture_and_parsers():
    cam = np.full((480, 640, 3), 77, np.uint8)
    out = fit_picture(cam, (1280, 720))
    assert out.shape == (720, 1280, 3) and out[360, 640, 0] == 77 and out[360, 10, 0] == 0
    assert parse_size("1280x720") == (1280, 720)
    with pytest.raises(ValueError):
        parse_size("big")
    assert parse_colour("#ff0001") == (255, 0, 1)
    with pytest.raises(ValueError):
        ComposeOptions(mode="tile")
