"""Builds the hostile-input corpus for tests/test_hostile.py into a tmp folder at test time (no binary files in git).

Every dataset starts from one good image, `images/a.png` (48×32, a hole at 4,4 8×8), so a case adds exactly one
problem and the CLI must report exactly that problem. Images are tiny and non-square (48 wide, 32 high) so a
swapped width/height or a missed EXIF rotation shows.

    BAD_CASES      id -> Case: writes the bad dataset, says which file (and CSV line) the error must name
    GOOD_IMAGES    id -> GoodImage: an odd but valid image, the upright RGB the output must show outside the hole
"""
from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

W, H = 48, 32  # every small test image: wider than high
HEADER = "image,x,y,width,height"
GOOD_ROW = "a.png,4,4,8,8"
BOX = (4, 4, 8, 8)  # x, y, w, h of GOOD_ROW


# ---------------------------------------------------------------------------------------------- image bytes


def rgb_array(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png(w: int = W, h: int = H, seed: int = 0) -> bytes:
    return encode(rgb_array(w, h, seed))


def jpeg(w: int = W, h: int = H, seed: int = 0) -> bytes:
    return encode(rgb_array(w, h, seed), "JPEG", quality=90)


def corrupt_bytes(n: int = 3000, seed: int = 0) -> bytes:
    """Random bytes: no image format's magic number."""
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return b"NOT" + data  # make sure it cannot start with a real signature by chance


def truncated(data: bytes) -> bytes:
    """The first half of a file (a download cut short)."""
    return data[: len(data) // 2]


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=None)
def bomb_png(width: int, height: int) -> bytes:
    """A VALID 1-bit all-black PNG of width×height: a few tens of KiB on disk, width*height pixels decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + packed bits
    compressor = zlib.compressobj(9)
    parts = []
    rows_per_piece = 500
    for start in range(0, height, rows_per_piece):
        parts.append(compressor.compress(row * min(rows_per_piece, height - start)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def exif_jpeg(upright: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose stored pixels must be turned by EXIF `orientation` (6 or 8) to show `upright`."""
    stored = Image.fromarray(upright).transpose(
        {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def upright_from_stored(stored: np.ndarray, orientation: int) -> np.ndarray:
    """Independent of PIL's exif_transpose: orientation 6 = stored pixels rotated 90° clockwise for display."""
    return np.ascontiguousarray(np.rot90(stored, k={6: -1, 8: 1}[orientation]))


def blocky(w: int = W, h: int = H) -> np.ndarray:
    """Flat 8×8 blocks of colour: survives JPEG well and shows any rotation."""
    ys, xs = np.mgrid[0:h, 0:w]
    blocks = (ys // 8) * 7 + (xs // 8) * 3
    return np.stack([(blocks * 37) % 256, (blocks * 91) % 256, (blocks * 13 + 60) % 256], -1).astype(np.uint8)


def mpo(seed: int = 11) -> bytes:
    """A multi-picture JPEG (what many phones write): PIL reports format MPO, opened through its JPEG opener."""
    first, second = Image.fromarray(blocky()), Image.fromarray(rgb_array(seed=seed))
    return encode(first, "MPO", save_all=True, append_images=[second], quality=95)


def gray16_png(values: np.ndarray) -> bytes:
    image = Image.fromarray(values.astype(np.uint16))  # mode I;16
    return encode(image)


def rgb16_png(values: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", values.astype(np.uint16)[:, :, ::-1])  # cv2 writes 48-bit RGB PNGs
    assert ok
    return data.tobytes()


# ---------------------------------------------------------------------------------------------- datasets


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def base_dataset(root: Path, *, csv: str | bytes | None = None) -> Path:
    """images/a.png (good) + masks.csv with its one hole (or the given CSV text)."""
    write(root / "images" / "a.png", png())
    write(root / "masks.csv", csv if csv is not None else csv_text(GOOD_ROW))
    return root


def mask_png(w: int = W, h: int = H, box: tuple[int, int, int, int] = BOX) -> bytes:
    mask = np.zeros((h, w), np.uint8)
    x, y, bw, bh = box
    mask[y : y + bh, x : x + bw] = 255
    return encode(mask)


def png_mask_dataset(root: Path) -> Path:
    """images/a.png + masks/a.png."""
    write(root / "images" / "a.png", png())
    write(root / "masks" / "a.png", mask_png())
    return root


@dataclass
class Case:
    """A dataset with one problem. `expect` = (file as the error names it, a fragment of the message);
    the file may be "ROOT" for problems with the dataset folder itself."""
    build: Callable[[Path, Path], None]  # (dataset root, a folder outside the dataset) -> writes the dataset
    expect: list[tuple[str, str]]
    fatal: bool = False  # a dataset-level problem: --skip-invalid does not help
    needs: str | None = None  # "non-root" when the case only works for an unprivileged user
    bad_images: list[str] = field(default_factory=list)  # images --skip-invalid must leave out


def _add_image(name: str, data: bytes | Callable[[], bytes], row: str | None = "default"):
    def build(root: Path, outside: Path) -> None:
        base_dataset(root, csv=csv_text(GOOD_ROW, *([f"{name},2,2,4,4"] if row == "default" else
                                                    [row] if row else [])))
        write(root / "images" / name, data() if callable(data) else data)
    return build


def _csv(*rows: str, header: str = HEADER, raw: bytes | None = None):
    def build(root: Path, outside: Path) -> None:
        base_dataset(root, csv=raw if raw is not None else csv_text(*rows, header=header))
        write(root / "images" / "b.png", png(seed=1))
    return build


def _symlinked_file(root: Path, outside: Path) -> None:
    base_dataset(root, csv=csv_text(GOOD_ROW, "evil.png,2,2,4,4"))
    target = write(outside / "secret.png", png(seed=7))
    os.symlink(target, root / "images" / "evil.png")


def _symlinked_folder(root: Path, outside: Path) -> None:
    base_dataset(root, csv=csv_text(GOOD_ROW, "cats/c.png,2,2,4,4"))
    write(outside / "cats" / "c.png", png(seed=7))
    os.symlink(outside / "cats", root / "images" / "cats", target_is_directory=True)


def _symlinked_images_dir(root: Path, outside: Path) -> None:
    write(outside / "images" / "a.png", png())
    root.mkdir(parents=True)
    os.symlink(outside / "images", root / "images", target_is_directory=True)
    write(root / "masks.csv", csv_text(GOOD_ROW))


def _symlinked_csv(root: Path, outside: Path) -> None:
    write(root / "images" / "a.png", png())
    target = write(outside / "masks.csv", csv_text(GOOD_ROW))
    os.symlink(target, root / "masks.csv")


def _symlinked_mask(root: Path, outside: Path) -> None:
    png_mask_dataset(root)
    write(root / "images" / "b.jpg", jpeg(seed=1))
    target = write(outside / "mask.png", mask_png())
    os.symlink(target, root / "masks" / "b.png")


def _symlink_loop(root: Path, outside: Path) -> None:
    base_dataset(root)
    os.symlink(".", root / "images" / "loop", target_is_directory=True)


def _both_sources(root: Path, outside: Path) -> None:
    base_dataset(root)
    write(root / "masks" / "a.png", mask_png())


def _no_source(root: Path, outside: Path) -> None:
    write(root / "images" / "a.png", png())


def _mask_other_size(root: Path, outside: Path) -> None:
    png_mask_dataset(root)
    write(root / "images" / "b.png", png(seed=1))
    write(root / "masks" / "b.png", mask_png(W + 1, H))


def _mask_file(name: str, data: bytes):
    def build(root: Path, outside: Path) -> None:
        png_mask_dataset(root)
        write(root / "images" / "b.png", png(seed=1))
        if name != "b.png":
            write(root / "masks" / "b.png", mask_png())
        if data is not None:
            write(root / "masks" / name, data)
    return build


def _empty_images(root: Path, outside: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()


def _unreadable(root: Path, outside: Path) -> None:
    _add_image("locked.png", png(seed=1))(root, outside)
    os.chmod(root / "images" / "locked.png", 0)


def _fifo(root: Path, outside: Path) -> None:
    base_dataset(root)
    os.mkfifo(root / "images" / "pipe.png")


def _two_names(first: str, second: str):
    def build(root: Path, outside: Path) -> None:
        base_dataset(root, csv=csv_text(GOOD_ROW, f"{first},2,2,4,4", f"{second},2,2,4,4"))
        write(root / "images" / first, png(seed=1) if first.endswith(".png") else jpeg(seed=1))
        if (root / "images" / second).exists():
            import pytest

            pytest.skip("case-insensitive file system: both names are the same file here")
        write(root / "images" / second, png(seed=2) if second.endswith(".png") else jpeg(seed=2))
    return build


def _row_names_folder(root: Path, outside: Path) -> None:
    base_dataset(root, csv=csv_text(GOOD_ROW, "cats,2,2,4,4"))
    write(root / "images" / "cats" / "c.png", png(seed=1))
    with open(root / "masks.csv", "a", encoding="utf-8") as fh:
        fh.write("cats/c.png,2,2,4,4\n")


BAD_CASES: dict[str, Case] = {
    # --- broken image files
    "corrupt-random-bytes": Case(_add_image("bad.png", corrupt_bytes()), [("images/bad.png", "cannot be read")],
                                 bad_images=["bad.png"]),
    "truncated-png": Case(_add_image("cut.png", lambda: truncated(png(seed=3))), [("images/cut.png", "")],
                          bad_images=["cut.png"]),
    "truncated-jpeg": Case(_add_image("cut.jpg", lambda: truncated(jpeg(seed=3))), [("images/cut.jpg", "")],
                           bad_images=["cut.jpg"]),
    "zero-byte": Case(_add_image("empty.png", b""), [("images/empty.png", "0-byte")], bad_images=["empty.png"]),
    "fifo-named-png": Case(_fifo, [("images/pipe.png", "")], bad_images=["pipe.png"]),
    "bomb-400Mpx-over-pil-hard-limit": Case(_add_image("bomb.png", lambda: bomb_png(20_000, 20_000)),
                                            [("images/bomb.png", "decompression bomb")], bad_images=["bomb.png"]),
    "bomb-100Mpx-over-pil-limit": Case(_add_image("bomb.png", lambda: bomb_png(10_000, 10_000)),
                                       [("images/bomb.png", "decompression bomb")], bad_images=["bomb.png"]),
    "bmp-named-png": Case(_add_image("bmp.png", lambda: encode(rgb_array(seed=4), "BMP")),
                          [("images/bmp.png", "")], bad_images=["bmp.png"]),
    "not-an-image-extension": Case(_add_image("notes.txt", b"some notes\n", row=None),
                                   [("images/notes.txt", "not an image")], bad_images=["notes.txt"]),
    "unreadable-chmod-000": Case(_unreadable, [("images/locked.png", "")], needs="non-root",
                                 bad_images=["locked.png"]),
    "newline-in-file-name": Case(_add_image("x\ny.png", corrupt_bytes(), row=None), [("images/x", "")],
                                 bad_images=["x\ny.png"]),
    # --- masks.csv
    "csv-missing-column": Case(_csv("a.png,4,4,8", header="image,x,y,width"), [("masks.csv:1", "height")],
                               fatal=True),
    "csv-non-integer-float": Case(_csv(GOOD_ROW, "b.png,1.5,2,4,4"), [("masks.csv:3", "whole numbers")],
                                  bad_images=["b.png"]),
    "csv-non-integer-text": Case(_csv(GOOD_ROW, "b.png,two,2,4,4"), [("masks.csv:3", "whole numbers")],
                                 bad_images=["b.png"]),
    "csv-empty-field": Case(_csv(GOOD_ROW, "b.png,,2,4,4"), [("masks.csv:3", "whole numbers")],
                            bad_images=["b.png"]),
    "csv-nul-byte": Case(_csv(raw=csv_text(GOOD_ROW, "b.png,1,1,4,4\x00").encode()), [("masks.csv:3", "")],
                         bad_images=["b.png"]),
    "csv-box-past-right-edge": Case(_csv(GOOD_ROW, f"b.png,{W - 4},2,5,4"), [("masks.csv:3", "inside")],
                                    bad_images=["b.png"]),
    "csv-box-past-bottom-edge": Case(_csv(GOOD_ROW, f"b.png,2,{H - 1},4,2"), [("masks.csv:3", "inside")],
                                     bad_images=["b.png"]),
    "csv-box-negative-x": Case(_csv(GOOD_ROW, "b.png,-1,2,4,4"), [("masks.csv:3", "inside")],
                               bad_images=["b.png"]),
    "csv-box-negative-size": Case(_csv(GOOD_ROW, "b.png,10,10,-4,4"), [("masks.csv:3", "positive")],
                                  bad_images=["b.png"]),
    "csv-box-zero-size": Case(_csv(GOOD_ROW, "b.png,10,10,0,4"), [("masks.csv:3", "positive")],
                              bad_images=["b.png"]),
    "csv-box-huge-number": Case(_csv(GOOD_ROW, "b.png,1,1,99999999999999999999,4"), [("masks.csv:3", "inside")],
                                bad_images=["b.png"]),
    "csv-unknown-image": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "zzz.png,1,1,4,4"),
                              [("masks.csv:4", "does not exist")]),
    "csv-duplicate-row": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "b.png,1,1,4,4"), [("masks.csv:4", "line 3")],
                              bad_images=["b.png"]),
    "csv-latin1-bytes": Case(_csv(raw=csv_text(GOOD_ROW, "b.png,1,1,4,4").encode() + b"caf\xe9.png,1,1,4,4\n"),
                             [("masks.csv", "UTF-8")], fatal=True),
    "csv-utf16": Case(_csv(raw=csv_text(GOOD_ROW, "b.png,1,1,4,4").encode("utf-16")), [("masks.csv", "UTF-8")],
                      fatal=True),
    "csv-header-only": Case(_csv(), [("masks.csv", "no rows")], fatal=True),
    "csv-zero-byte": Case(_csv(raw=b""), [("masks.csv", "empty")], fatal=True),
    "csv-short-row": Case(_csv(GOOD_ROW, "b.png,1,1"), [("masks.csv:3", "fields")], bad_images=["b.png"]),
    "csv-short-row-image-column-last": Case(_csv("4,4,8,8,a.png", "1,1,4,4,b.png", "1,1",
                                                 header="x,y,width,height,image"), [("masks.csv:4", "fields")],
                                            fatal=True),
    "csv-field-over-csv-limit": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "b.png," + "1" * 200_000 + ",1,1,1"),
                                     [("masks.csv", "")], fatal=True),
    "csv-row-names-a-folder": Case(_row_names_folder, [("masks.csv:3", "cats")]),
    "csv-image-without-row": Case(_csv(GOOD_ROW), [("masks.csv", "images/b.png")], bad_images=["b.png"]),
    # --- masks.csv paths that try to leave images/
    "csv-dotdot-path": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "../masks.csv,1,1,4,4"), [("masks.csv:4", "..")]),
    "csv-dotdot-inside-path": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "x/../../outside.png,1,1,4,4"),
                                   [("masks.csv:4", "..")]),
    "csv-absolute-path": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "/etc/passwd,1,1,4,4"),
                              [("masks.csv:4", "absolute")]),
    "csv-windows-drive-path": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "C:\\x.png,1,1,4,4"),
                                   [("masks.csv:4", "absolute")]),
    "csv-windows-dotdot-path": Case(_csv(GOOD_ROW, "b.png,1,1,4,4", "..\\x.png,1,1,4,4"),
                                    [("masks.csv:4", "..")]),
    # --- symlinks out of the dataset
    "symlink-file-outside": Case(_symlinked_file, [("images/evil.png", "outside")], bad_images=["evil.png"]),
    "symlink-folder-outside": Case(_symlinked_folder, [("images/cats", "outside")], fatal=True),
    "symlink-images-dir-outside": Case(_symlinked_images_dir, [("images", "outside")], fatal=True),
    "symlink-masks-csv-outside": Case(_symlinked_csv, [("masks.csv", "outside")], fatal=True),
    "symlink-mask-png-outside": Case(_symlinked_mask, [("masks/b.png", "outside")], bad_images=["b.jpg"]),
    "symlink-loop": Case(_symlink_loop, [("images/loop", "loop")], fatal=True),
    # --- mask sources
    "both-mask-sources": Case(_both_sources, [("ROOT", "both masks.csv and masks/")], fatal=True),
    "no-mask-source": Case(_no_source, [("ROOT", "no mask source")], fatal=True),
    "mask-png-other-size": Case(_mask_other_size, [("masks/b.png", "size")], bad_images=["b.png"]),
    "mask-png-missing": Case(_mask_file("b.png", None), [("masks/b.png", "missing")], bad_images=["b.png"]),
    "mask-png-corrupt": Case(_mask_file("b.png", corrupt_bytes()), [("masks/b.png", "cannot be read")],
                             bad_images=["b.png"]),
    "mask-png-zero-byte": Case(_mask_file("b.png", b""), [("masks/b.png", "0-byte")], bad_images=["b.png"]),
    "mask-png-all-black": Case(_mask_file("b.png", encode(np.zeros((H, W), np.uint8))),
                               [("masks/b.png", "no hole")], bad_images=["b.png"]),
    "mask-png-orphan": Case(_mask_file("zzz.png", mask_png()), [("masks/zzz.png", "no matching image")],
                            fatal=True),
    # --- folder layout
    "empty-images-folder": Case(_empty_images, [("ROOT/images", "holds no images")], fatal=True),
    "same-name-other-extension": Case(_two_names("c.jpg", "c.png"), [("images/c.png", "output name")],
                                      bad_images=["c.png"]),
    "same-name-other-case": Case(_two_names("C.png", "c.png"), [("images/c.png", "output name")],
                                 bad_images=["c.png"]),
    "same-name-other-extension-case": Case(_two_names("d.PNG", "d.png"), [("images/d.png", "output name")],
                                           bad_images=["d.png"]),
}


# ---------------------------------------------------------------------------------------------- good images


@dataclass
class GoodImage:
    name: str
    data: Callable[[], bytes]
    expected: Callable[[Path], np.ndarray]  # the file -> the upright RGB the output must show outside the hole
    box: tuple[int, int, int, int] = BOX  # in upright coordinates
    tolerance: int = 0


def _pil_palette_rgb(path: Path) -> np.ndarray:
    image = Image.open(path)
    palette = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
    return palette[np.asarray(image)]


def _gray_repeat(path: Path) -> np.ndarray:
    grey = np.asarray(Image.open(path).getchannel(0))
    return np.repeat(grey[:, :, None], 3, axis=2)


def _palette(transparency: bool) -> bytes:
    image = Image.fromarray(blocky()).quantize(16)
    if transparency:
        return encode(image, transparency=0)
    return encode(image)


def _rgba() -> bytes:
    rgba = np.concatenate([rgb_array(seed=5), np.full((H, W, 1), 0, np.uint8)], axis=2)
    rgba[::2, :, 3] = 255  # half fully transparent: the colour must still be kept, not blackened
    return encode(Image.fromarray(rgba, "RGBA"))


GRAY16 = np.tile(np.array([65535, 32768, 0, 257, 200, 32767, 1000, 65280], np.uint16), (H, W // 8))
GRAY16_EXPECTED = np.round(GRAY16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)  # 65535->255, 32768->128
RGB16 = np.stack([np.tile(np.array([65535, 32768, 0, 65535], np.uint16), (H, W // 4))] * 3, -1)
RGB16[:, :, 1] = 0


GOOD_IMAGES: dict[str, GoodImage] = {
    "grayscale-L": GoodImage("g.png", lambda: encode(rgb_array(seed=6)[:, :, 0]), _gray_repeat),
    "palette-P": GoodImage("p.png", lambda: _palette(False), _pil_palette_rgb),
    "palette-P-transparency": GoodImage("pt.png", lambda: _palette(True), _pil_palette_rgb),
    "rgba": GoodImage("rgba.png", _rgba, lambda p: np.asarray(Image.open(p))[:, :, :3]),
    "gray-alpha-LA": GoodImage("la.png", lambda: encode(Image.fromarray(rgb_array(seed=8)[:, :, :2], "LA")),
                               _gray_repeat),
    "cmyk-jpeg": GoodImage("cmyk.jpg", lambda: encode(Image.fromarray(blocky()).convert("CMYK"), "JPEG",
                                                      quality=95),
                           lambda p: np.asarray(Image.open(p).convert("RGB"))),
    "gray16-png": GoodImage("g16.png", lambda: gray16_png(GRAY16), lambda p: np.repeat(
        GRAY16_EXPECTED[:, :, None], 3, axis=2)),
    "rgb16-png": GoodImage("rgb16.png", lambda: rgb16_png(RGB16),
                           lambda p: np.round(RGB16 * (255.0 / 65535.0)).astype(np.uint8)),
    "exif-orientation-6": GoodImage(
        "rot6.jpg", lambda: exif_jpeg(blocky(), 6),
        lambda p: upright_from_stored(np.asarray(Image.open(p).convert("RGB")), 6),
        box=(W - 10, 2, 8, 8)),  # x+w = 46 > 32: only fits the upright (48 wide) image
    "exif-orientation-8": GoodImage(
        "rot8.jpg", lambda: exif_jpeg(blocky(), 8),
        lambda p: upright_from_stored(np.asarray(Image.open(p).convert("RGB")), 8),
        box=(W - 10, H - 10, 8, 8)),
    "webp-lossless": GoodImage("w.webp", lambda: encode(rgb_array(seed=9), "WEBP", lossless=True),
                               lambda p: rgb_array(seed=9)),
    "mpo-multi-picture-jpeg": GoodImage("phone.jpg", mpo, lambda p: np.asarray(Image.open(p).convert("RGB"))),
    "jpeg-uppercase-ext": GoodImage("u.JPEG", lambda: jpeg(seed=10),
                                    lambda p: np.asarray(Image.open(p).convert("RGB"))),
}


def large_gradient(w: int = 3000, h: int = 2000) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, (xs + ys) % 256], -1).astype(np.uint8)
