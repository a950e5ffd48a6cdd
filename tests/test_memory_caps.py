"""Memory caps that hold (issue 14 §5): NIfTI and 2D images cost what their bytes hold, never what their headers claim.

Every refusal is one line that names neither the file nor its folder (they may name the
patient), and its peak resident memory is measured in a fresh interpreter
(tests/peak_memory.py: the kernel's high-water mark, because Pillow's decoders are C
allocations that tracemalloc does not see). Memory is asserted, time never.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tests.peak_memory import peak_of
from voxpipe.limits import ResourceLimitError, TruncatedError, check_present, inflate_pieces, max_bytes
from voxpipe_plugins.io_image.reader import ImageReadError, read_image2d
from voxpipe_plugins.io_nifti.header import build_header
from voxpipe_plugins.io_nifti.reader import read_nifti
from voxpipe_plugins.io_nifti.voxels import NiftiReadError

BUDGET = 64 * 2**20
SECRET = "Doe_Jane_1950"  # a file name that must never reach a message


def _one_clean_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and SECRET not in text and "/" not in text, text
    return text


def _header(shape, dtype=np.float32, vox_offset: int = 352) -> bytes:
    header = build_header(shape, np.dtype(dtype), np.eye(4))
    header["vox_offset"] = vox_offset
    return header.tobytes() + b"\0" * (vox_offset - 348)


def _write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=6) as stream:
            stream.write(payload)
    else:
        path.write_bytes(payload)
    return path


# --- NIfTI: declared size against the bytes present ----------------------------------------------
SHAPE = (8, 9, 10)
DATA = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE, order="F")
FULL = DATA.tobytes(order="F")

TRUNCATIONS = {
    "header only": lambda: _header(SHAPE, np.int16),
    "half the voxels": lambda: _header(SHAPE, np.int16) + FULL[: len(FULL) // 2],
    "one byte short": lambda: _header(SHAPE, np.int16) + FULL[:-1],
    "vox_offset past the end": lambda: _header(SHAPE, np.int16, vox_offset=4096)[:400],
}


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("case", sorted(TRUNCATIONS))
def test_truncated_nifti_is_one_line_with_declared_and_held_bytes(tmp_path, suffix, case):
    path = _write(tmp_path / f"{SECRET}{suffix}", TRUNCATIONS[case]())
    with pytest.raises(TruncatedError) as caught:
        read_nifti(path)
    text = _one_clean_line(caught.value)
    assert f"declares 1.41 KiB ({len(FULL)} bytes)" in text and "holds" in text and "truncated" in text


def test_gzip_stream_cut_short_is_truncated_not_a_crash(tmp_path):
    whole = _write(tmp_path / "whole.nii.gz", _header(SHAPE, np.int16) + FULL).read_bytes()
    for keep in (30, len(whole) // 2, len(whole) - 9):  # inside the gzip header's deflate data, mid-stream, before the trailer
        path = tmp_path / f"{SECRET}.nii.gz"
        path.write_bytes(whole[:keep])
        with pytest.raises((TruncatedError, NiftiReadError)) as caught:
            read_nifti(path)
        _one_clean_line(caught.value)


@pytest.mark.parametrize("payload", [b"x" * 400, b"", b"\x1f\x8b" + b"\xff" * 300])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_not_a_nifti_is_one_line_without_the_path(tmp_path, payload, suffix):
    path = tmp_path / f"{SECRET}{suffix}"
    path.write_bytes(payload)
    with pytest.raises(NiftiReadError) as caught:
        read_nifti(path)
    _one_clean_line(caught.value)


def test_corrupt_gzip_data_after_the_header_is_one_line(tmp_path):
    whole = bytearray(_write(tmp_path / "x.nii.gz", _header(SHAPE, np.int16) + FULL).read_bytes())
    whole[len(whole) // 2 : len(whole) // 2 + 40] = b"\xff" * 40
    path = tmp_path / f"{SECRET}.nii.gz"
    path.write_bytes(bytes(whole))
    with pytest.raises((NiftiReadError, TruncatedError)) as caught:
        read_nifti(path)
    _one_clean_line(caught.value)


def test_complete_files_still_read_in_every_gzip_layout(tmp_path):
    """Several gzip members, zero padding after the last, extensions before the voxels: read as nibabel reads them."""
    payload = _header(SHAPE, np.int16, vox_offset=368) + FULL
    members = tmp_path / "members.nii.gz"
    with open(members, "wb") as handle:
        handle.writelines(gzip.compress(payload[start : start + 700]) for start in range(0, len(payload), 700))
        handle.write(b"\0" * 64)
    plain = _write(tmp_path / "plain.nii", payload)
    for path in (members, plain):
        np.testing.assert_array_equal(read_nifti(path, "keep")[0].numpy(), DATA)
        np.testing.assert_array_equal(read_nifti(path, "keep")[0].numpy(), np.asanyarray(nib.load(str(plain)).dataobj))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("scaling", [None, (2.0, -10.0), (0.5, 0.0)])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_voxels_and_scaling_match_nibabel(tmp_path, dtype, scaling, suffix):
    array = (np.random.default_rng(1).random((5, 6, 7, 2)) * 100).astype(dtype)
    image = nib.Nifti1Image(array, np.eye(4))
    if scaling:
        image.header.set_slope_inter(*scaling)
    path = tmp_path / f"v{suffix}"
    nib.save(image, str(path))
    expected = np.asanyarray(nib.load(str(path)).dataobj)
    for wanted in ("keep", "float32", "float64"):
        got = np.moveaxis(read_nifti(path, wanted).numpy(), 0, -1)
        want = expected if wanted == "keep" else expected.astype(wanted)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_a_gzip_stream_longer_than_declared_is_read_only_as_far_as_declared(tmp_path):
    path = tmp_path / "long.nii.gz"
    with gzip.open(path, "wb", compresslevel=9) as stream:
        stream.write(_header(SHAPE, np.int16) + FULL)
        for _ in range(64):
            stream.write(bytes(1 << 22))  # 256 MiB of zeros nobody declared
    delta, error = peak_of(
        f"from voxpipe_plugins.io_nifti.reader import read_nifti\npath = {str(path)!r}",
        "assert read_nifti(path, 'keep').shape == (1, 8, 9, 10)",
        warmups=1,
    )
    assert error is None and delta < BUDGET


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_the_67_byte_3_gib_nifti_costs_no_memory(tmp_path, suffix):
    """Issue 14: a header declaring 1024x1024x768 float32 (3 GiB, under the 16 GiB cap) and no voxels at all."""
    path = _write(tmp_path / f"lie{suffix}", _header((1024, 1024, 768)))
    assert path.stat().st_size < 400
    warm = _write(tmp_path / f"warm{suffix}", _header((2, 2, 2)) + bytes(32))
    delta, error = peak_of(
        f"from voxpipe_plugins.io_nifti.reader import read_nifti\nfrom pathlib import Path\n"
        f"paths = iter([Path({str(warm)!r}), Path({str(path)!r})])",
        "read_nifti(next(paths))",
        warmups=1,
    )
    assert error and error[0] == "TruncatedError" and "3221225472 bytes" in error[1], error
    assert delta < BUDGET, f"{delta / 2**20:.0f} MiB"


def test_a_partly_present_nifti_costs_what_it_holds_not_what_it_declares(tmp_path):
    """256 MiB declared, 8 MiB present (incompressible): refused having committed about the 8 MiB it held."""
    path = tmp_path / "part.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(_header((512, 512, 256)))
        stream.write(np.random.default_rng(0).bytes(8 << 20))
    delta, error = peak_of(f"from voxpipe_plugins.io_nifti.reader import read_nifti\npath = {str(path)!r}", "read_nifti(path, 'keep')")
    assert error and error[0] == "TruncatedError" and "holds 8 MiB" in error[1], error
    assert delta < BUDGET, f"{delta / 2**20:.0f} MiB"


def test_a_truncated_case_fails_alone_in_a_run(cli, tmp_path, write_config):
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "good.nii.gz", np.zeros((4, 4, 4), np.float32))
    _write(tmp_path / "in" / f"{SECRET}.nii.gz", _header((1024, 1024, 768)))
    config = write_config("version: 1\nname: x\nstages:\n  - use: load.nifti\n  - use: write.nifti\n")
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    text = result.stdout + result.stderr
    assert result.exit_code == 1 and "truncated" in text and "Traceback" not in text and SECRET not in text
    assert len(list((tmp_path / "out").glob("case-*/image.nii.gz"))) == 1


# --- the cap itself and the streaming helpers ----------------------------------------------------
@pytest.mark.parametrize("value", ["0.5GiB", "abc", "nan", "inf", "-1", "0", "1e400", "-inf"])
def test_a_cap_that_is_not_a_positive_number_is_refused_not_replaced(monkeypatch, value):
    monkeypatch.setenv("VOXPIPE_MAX_GIB", value)
    with pytest.raises(ResourceLimitError, match="VOXPIPE_MAX_GIB"):
        max_bytes()


def test_cap_values_that_are_numbers_apply(monkeypatch):
    monkeypatch.setenv("VOXPIPE_MAX_GIB", " 0.5 ")
    assert max_bytes() == 2**29
    monkeypatch.setenv("VOXPIPE_MAX_GIB", "")
    assert max_bytes() == 16 * 2**30
    assert max_bytes(2) == 2 * 2**30


def test_inflate_pieces_never_passes_its_limit_and_reads_every_member(tmp_path):
    import io

    stream = gzip.compress(bytes(10 << 20)) + b"\0\0" + gzip.compress(b"tail")
    pieces = list(inflate_pieces(io.BytesIO(stream), 3 << 20))
    assert sum(map(len, pieces)) == 3 << 20 and max(map(len, pieces)) <= 1 << 20
    assert b"".join(inflate_pieces(io.BytesIO(stream), 1 << 40)).endswith(b"tail")
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = raw.compress(b"a" * 5000) + raw.flush() + b"trailing bytes"
    assert b"".join(inflate_pieces(io.BytesIO(data), 1 << 20, raw_deflate=True)) == b"a" * 5000
    with pytest.raises(zlib.error):
        list(inflate_pieces(io.BytesIO(gzip.compress(b"x") + b"garbage"), 100))


def test_check_present_message():
    check_present("x", 10, 10)
    with pytest.raises(
        TruncatedError, match=r"x is truncated: its header declares 3 GiB \(3221225472 bytes\) of data, the file holds 0 bytes"
    ):
        check_present("x", 3 * 2**30, -352)


# --- 2D images: the cap from the header, before decoding ------------------------------------------
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _forged(fmt: str, width: int, height: int, path: Path) -> Path:
    """A small real file of ``fmt`` whose header then claims ``width`` x ``height``."""
    small = Image.fromarray(np.full((16, 16, 3), 99, np.uint8))
    if fmt == "PNG":
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\0" + b"\x63" * 48)  # one row; the rest is missing
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
        return path
    small.save(path, format=fmt)
    data = bytearray(path.read_bytes())
    if fmt == "JPEG":
        at = data.index(b"\xff\xc0") + 5
        data[at : at + 4] = struct.pack(">HH", height, width)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "TIFF":
        (ifd,) = struct.unpack_from("<I", data, 4)
        (count,) = struct.unpack_from("<H", data, ifd)
        for n in range(count):
            at = ifd + 2 + 12 * n
            tag, kind = struct.unpack_from("<HH", data, at)
            if tag in (256, 257):
                value = width if tag == 256 else height
                data[at + 8 : at + 12] = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    path.write_bytes(bytes(data))
    return path


FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the test's own look at the header
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("mode", ["keep", "gray", "rgb"])
def test_every_2d_format_is_capped_from_its_header(tmp_path, monkeypatch, fmt, mode):
    monkeypatch.setenv("VOXPIPE_MAX_GIB", "0.5")
    path = _forged(fmt, 12000, 12000, tmp_path / f"{SECRET}{FORMATS[fmt]}")
    with Image.open(path) as check:
        assert check.size == (12000, 12000)
    with pytest.raises(ResourceLimitError, match="above the 0.5 GiB cap") as caught:
        read_image2d(path, mode)
    _one_clean_line(caught.value)
    with pytest.raises(ResourceLimitError):
        read_image2d(path, mode, max_gib=0.25)  # the stage parameter wins over the environment


def test_pillows_own_bomb_limit_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXPIPE_MAX_GIB", "512")  # our cap would allow it: Pillow's limit still refuses
    path = _forged("PNG", 20000, 20000, tmp_path / f"{SECRET}.png")
    with pytest.raises(ImageReadError, match="decompression-bomb limit") as caught:
        read_image2d(path)
    _one_clean_line(caught.value)


def test_truncated_2d_images_are_one_line(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for fmt, suffix in FORMATS.items():
        whole = tmp_path / f"whole{suffix}"
        Image.fromarray(pixels).save(whole, format=fmt)
        path = tmp_path / f"{SECRET}{suffix}"
        path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(ImageReadError, match="truncated or corrupt") as caught:
            read_image2d(path)
        _one_clean_line(caught.value)


@pytest.mark.parametrize("fmt", ["GIF", "PPM", "TGA", "PCX", "ICO", "WEBP", "EPS"])
def test_formats_other_than_the_accepted_four_are_never_parsed(tmp_path, fmt):
    path = tmp_path / f"{SECRET}.png"
    if fmt == "EPS":  # Pillow would run Ghostscript to read it
        path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n")
    else:
        try:
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path, format=fmt)
        except (KeyError, OSError):
            pytest.skip(f"this Pillow cannot write {fmt}")
    with pytest.raises(ImageReadError, match="not a readable PNG, JPEG, TIFF, BMP image") as caught:
        read_image2d(path)
    _one_clean_line(caught.value)


def test_only_the_first_tiff_page_is_read(tmp_path):
    first = Image.fromarray(np.full((8, 8), 7, np.uint8))
    path = tmp_path / "pages.tif"
    first.save(path, save_all=True, append_images=[Image.fromarray(np.zeros((64, 64), np.uint8))])
    assert read_image2d(path).shape == (1, 8, 8)


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """Issue 14: a real 12000 x 12000 RGB PNG of a few hundred KB (decoded: 412 MiB, as float32 1.6 GiB)."""
    path = tmp_path_factory.mktemp("png") / "big.png"
    deflater = zlib.compressobj(9)
    row = b"\0" + b"\x40" * (12000 * 3)
    body = b"".join(deflater.compress(row) for _ in range(12000)) + deflater.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )
    return path


def test_the_410_kb_png_bomb_is_refused_before_decoding(big_png, tmp_path):
    assert big_png.stat().st_size < 2**20
    warm = tmp_path / "warm.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(warm)
    delta, error = peak_of(
        f"from voxpipe_plugins.io_image.reader import read_image2d\nfrom pathlib import Path\n"
        f"paths = iter([Path({str(warm)!r}), Path({str(big_png)!r})])",
        "read_image2d(next(paths))",
        env={"VOXPIPE_MAX_GIB": "0.5"},
        warmups=1,
    )
    assert error and error[0] == "ResourceLimitError" and "above the 0.5 GiB cap" in error[1], error
    assert delta < BUDGET, f"{delta / 2**20:.0f} MiB"


def test_image_cap_is_a_loader_parameter(cli, write_config, tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "in" / "a.png")
    bad = write_config("version: 1\nname: x\nstages:\n  - use: load.image2d\n    with: {max_gib: 0}\n")
    assert cli("validate", bad).exit_code == 2
    config = write_config("version: 1\nname: x\nstages:\n  - use: load.image2d\n    with: {max_gib: 0.00001}\n  - use: write.nifti\n")
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 1 and "above the" in result.stdout + result.stderr
