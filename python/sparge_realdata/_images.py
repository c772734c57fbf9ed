"""The photographs bundled inside the scikit-image wheel, and the camera pan over one of them."""

from __future__ import annotations

import math

import numpy as np

# name -> skimage.data function. Only RGB photographs whose files ship inside the scikit-image
# wheel (skimage/data/*.png|jpg): they load with no network (no pooch download). Checked with
# scikit-image 0.26 and every socket connect blocked.
PHOTOS = {
    "astronaut": "astronaut",                  # 512 x 512, portrait, NASA
    "coffee": "coffee",                        # 400 x 600, cup on a table
    "chelsea": "chelsea",                      # 300 x 451, cat
    "rocket": "rocket",                        # 427 x 640, launch pad, sky
    "hubble": "hubble_deep_field",             # 872 x 1000, galaxies on black
    "retina": "retina",                        # 1411 x 1411, fundus photograph
    "ihc": "immunohistochemistry",             # 512 x 512, stained tissue
    "motorcycle": "stereo_motorcycle",         # 500 x 741, left view of the stereo pair
}


class UnknownImage(ValueError):
    pass


def check_names(names: list[str]) -> None:
    for n in names:
        if n not in PHOTOS:
            raise UnknownImage(f"unknown image {n!r} (valid: {', '.join(PHOTOS)})")


def load_photo(name: str) -> np.ndarray:
    """The photograph as float64 RGB in [0, 1], [H, W, 3]."""
    check_names([name])
    import skimage.data  # lazy: only the video kind needs scikit-image

    img = getattr(skimage.data, PHOTOS[name])()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    return img.astype(np.float64) / 255.0


def pan_extent(frames: int, patch: int) -> tuple[int, int]:
    """Total camera travel (dy, dx) in pixels over the clip: half a patch per frame to the
    right and a sixth of a patch per frame downwards (a slow, slightly diagonal pan)."""
    dx = round(0.5 * patch * (frames - 1))
    dy = round(patch * (frames - 1) / 6)
    return dy, dx


# The scene scale: the photograph is resized so that a frame of REFERENCE_GRID patches (plus the
# pan) covers it on its tighter axis, the token geometry of CogVideoX (30 x 45 latent patches of
# 16 x 16 pixels per 480 x 720 frame). A smaller grid sees a centred crop of that scene, so a
# token looks the same at every --size; a larger grid scales the photograph up to cover it.
REFERENCE_GRID = (30, 45)


def pan_frames(img: np.ndarray, frames: int, win_h: int, win_w: int,
               patch: int) -> np.ndarray:
    """[frames, win_h, win_w, 3]: a crop window sliding linearly over the photograph, from
    (top, left) + offset to (top + dy, left + dx) + offset, the offset centring the path."""
    from skimage.transform import resize

    dy, dx = pan_extent(frames, patch)
    h, w = img.shape[:2]
    cover_h = max(win_h, REFERENCE_GRID[0] * patch) + dy
    cover_w = max(win_w, REFERENCE_GRID[1] * patch) + dx
    s = max(cover_h / h, cover_w / w)
    nh, nw = max(cover_h, math.ceil(h * s)), max(cover_w, math.ceil(w * s))
    img = resize(img, (nh, nw), order=1, mode="edge", anti_aliasing=s < 1,
                 preserve_range=True)
    y0, x0 = (nh - win_h - dy) // 2, (nw - win_w - dx) // 2
    out = np.empty((frames, win_h, win_w, 3), dtype=np.float64)
    for t in range(frames):
        f = t / (frames - 1) if frames > 1 else 0.0
        y, x = y0 + round(dy * f), x0 + round(dx * f)
        out[t] = img[y:y + win_h, x:x + win_w]
    return out


def patch_tokens(frames: np.ndarray, patch: int) -> np.ndarray:
    """[T, gh*patch, gw*patch, 3] -> [T*gh*gw, patch*patch*3], tokens in row-major (t, h, w)
    order, each token the patch's pixels in (row, column, channel) order."""
    t, hh, ww, c = frames.shape
    gh, gw = hh // patch, ww // patch
    x = frames.reshape(t, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(t * gh * gw, patch * patch * c)
