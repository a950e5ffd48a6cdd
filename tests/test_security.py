"""Safe loading and writing, resource limits: pickle checkpoints never run, weights digests are checked
before parsing, writes stay inside the output root, outputs are private by default, and oversized or
bomb inputs are refused quickly within a small memory budget (measured, never timed).

Config injection (YAML python tags, `$`-expressions, `_target_`, dotted imports) is covered by
tests/test_injection.py.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import key_args
from voxpipe.limits import ResourceLimitError, check_gzip_file
from voxpipe.safe_paths import UnsafePathError, safe_join

MEMORY_BUDGET = 48 * 2**20  # generous: the refused inputs declare or inflate to 256 MiB and more


def _peak(function) -> tuple[int, BaseException | None]:
    """Peak traced memory (bytes) of a call, after one warm-up call (imports are not the input's fault)."""
    for _attempt in range(2):
        tracemalloc.start()
        caught = None
        try:
            function()
        except BaseException as exc:  # noqa: BLE001 - the caller checks what was raised
            caught = exc
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, caught


# --- checkpoints --------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_pickle_payload_checkpoint_never_executes(tmp_path, layout):
    torch = pytest.importorskip("torch")
    from voxpipe_plugins.deep.weights import WeightsError, read_state_dict

    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(marker)}, path, _use_new_zipfile_serialization=layout == "zip")
    with pytest.raises(WeightsError, match="refused: the checkpoint holds Python objects beyond tensors") as caught:
        read_state_dict(path)
    assert "weights_only" not in str(caught.value)  # never PyTorch's advice to unpickle it fully (tests/test_checkpoint_safety.py)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(path.read_bytes())
    with pytest.raises(WeightsError):
        read_state_dict(disguised)
    assert not marker.exists()


def test_weights_sha256_is_checked_before_parsing(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from voxpipe_plugins.deep.weights import WeightsError, file_sha256, read_state_dict

    good = tmp_path / "w.safetensors"
    save_file({"weight": torch.ones(3)}, str(good))
    digest = file_sha256(good)
    assert torch.equal(read_state_dict(good, digest)["weight"], torch.ones(3))
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    torch.save({"payload": _Payload(marker)}, evil)
    with pytest.raises(WeightsError, match="SHA-256"):
        read_state_dict(evil, digest)  # refused on the digest, before torch.load sees a byte
    assert not marker.exists()


def test_weights_sha256_in_configs_is_validated(cli, write_config):
    config = write_config(
        "version: 1\nname: x\nstages:\n  - use: load.nifti\n  - use: segment.deep\n    with:\n"
        "      network: UNet\n      args: {spatial_dims: 3, in_channels: 1, out_channels: 2, channels: [4, 8], strides: [2]}\n"
        "      roi_size: [16, 16, 16]\n      weights: w.safetensors\n      weights_sha256: not-a-digest\n"
    )
    result = cli("validate", config)
    assert result.exit_code == 2 and "weights_sha256" in result.stderr


# --- paths --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/b", "..", ".hidden", "", "x\\..\\y"])
def test_unsafe_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, name)


def test_planted_symlink_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    (root / "study-1").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safe_join(root, "study-1", "x.dcm", make_dirs=True)
    assert list(outside.iterdir()) == []


def test_deid_writes_nothing_through_a_planted_symlink(cli, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from tests.test_deid import _write_series
    from voxpipe_plugins.deid.pseudonyms import Pseudonyms

    study = pydicom.uid.generate_uid()
    _write_series(tmp_path / "in", study, pydicom.uid.generate_uid())
    key = tmp_path / "deid.key"
    key.write_text("ab" * 32 + "\n")
    os.chmod(key, 0o600)
    p = Pseudonyms(bytes.fromhex("ab" * 32))
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / f"study-{p.token('path', p.uid(study), 12)}").symlink_to(outside)
    result = cli("deid", tmp_path / "in", out, "--key", key)
    assert result.exit_code == 1 and "symbolic link" in result.stdout
    assert list(outside.iterdir()) == []


def test_run_replaces_planted_links_instead_of_following_them(cli, tmp_path, write_config):
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "a.nii.gz", np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    config = write_config("version: 1\nname: x\nstages:\n  - use: load.nifti\n  - use: write.nifti\n")
    out = tmp_path / "out"
    assert cli("run", config, "-i", tmp_path / "in", "-o", out, "--workers", "0").exit_code == 0
    case = next(p for p in out.iterdir() if p.name.startswith("case-"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    for name in (case.name, "manifest.json"):
        target = out / name
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        else:
            target.unlink()
        target.symlink_to(outside if name == case.name else outside / "keep.txt")
    assert cli("run", config, "-i", tmp_path / "in", "-o", out, "--force", "--workers", "0").exit_code == 0
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"] and (outside / "keep.txt").read_text() == "untouched"
    assert not case.is_symlink() and (case / "image.nii.gz").is_file() and not (out / "manifest.json").is_symlink()


def test_run_refuses_a_planted_staging_link(cli, tmp_path, write_config):
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "a.nii.gz", np.zeros((4, 4, 4), np.float32))
    config = write_config("version: 1\nname: x\nstages:\n  - use: load.nifti\n  - use: write.nifti\n")
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / ".voxpipe").symlink_to(outside)
    result = cli("run", config, "-i", tmp_path / "in", "-o", out)
    assert result.exit_code == 2 and "symbolic link" in result.stderr and list(outside.iterdir()) == []


def test_config_file_names_cannot_traverse(cli, write_config):
    config = write_config(
        "version: 1\nname: x\nstages:\n  - use: load.dicom\n  - use: write.dicom_seg\n    with: {filename: ../../evil.dcm}\n"
    )
    result = cli("validate", config)
    assert result.exit_code == 2 and "filename" in result.stderr


# --- modes --------------------------------------------------------------------------------------
def test_outputs_are_private_by_default_and_configurable(tmp_path, monkeypatch):
    from voxpipe.atomic import publish_dir, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o600
    staging = tmp_path / "staging"
    staging.mkdir()
    publish_dir(staging, tmp_path / "case", tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "case").st_mode) == 0o700
    monkeypatch.setenv("VOXPIPE_FILE_MODE", "0640")
    write_json(tmp_path / "b.json", {"x": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- resource limits ----------------------------------------------------------------------------
def _nifti_header(shape, dtype=np.int16) -> bytes:
    from voxpipe_plugins.io_nifti.header import build_header

    return build_header(shape, np.dtype(dtype), np.eye(4)).tobytes() + b"\0\0\0\0"


def test_oversized_nifti_declared_shape_is_refused_before_allocating(tmp_path):
    from voxpipe_plugins.io_nifti.reader import read_nifti

    path = tmp_path / "huge.nii"
    path.write_bytes(_nifti_header((30000, 30000, 30000)))  # 50 TiB declared, 352 bytes on disk
    peak, caught = _peak(lambda: read_nifti(path))
    assert isinstance(caught, ResourceLimitError) and "above the" in str(caught)
    assert peak < MEMORY_BUDGET


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory) -> Path:
    """A .nii.gz that declares and inflates to 256 MiB of zeros (about 250 KiB on disk)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=9) as stream:
        stream.write(_nifti_header((512, 512, 512)))
        zeros = bytes(1 << 22)
        for _ in range(64):
            stream.write(zeros)
    return path


def test_gzip_nifti_bomb_is_refused_within_a_small_memory_budget(gzip_bomb, monkeypatch):
    from voxpipe_plugins.io_nifti.reader import read_nifti

    assert gzip_bomb.stat().st_size < 2**21
    monkeypatch.setenv("VOXPIPE_MAX_GIB", "0.0625")  # 64 MiB
    peak, caught = _peak(lambda: read_nifti(gzip_bomb))
    assert isinstance(caught, ResourceLimitError) and peak < MEMORY_BUDGET
    peak, caught = _peak(lambda: check_gzip_file(gzip_bomb, 2**26, "bomb"))
    assert isinstance(caught, ResourceLimitError) and "decompression bomb" in str(caught) and peak < MEMORY_BUDGET


def _deflated_bomb(path: Path, inflated: int = 256 * 2**20) -> Path:
    """A deflated-syntax DICOM file whose data set inflates to ``inflated`` bytes (a private OB of zeros)."""
    from pydicom.uid import generate_uid

    def element(group, elem, vr, value: bytes) -> bytes:
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
        return struct.pack("<HH2sH", group, elem, vr, len(value)) + value

    def ui(text: str) -> bytes:
        raw = text.encode()
        return raw + (b"\0" if len(raw) % 2 else b"")

    meta_body = (
        element(0x0002, 0x0001, b"OB", b"\0\1")
        + element(0x0002, 0x0002, b"UI", ui("1.2.840.10008.5.1.4.1.1.2"))
        + element(0x0002, 0x0003, b"UI", ui(generate_uid()))
        + element(0x0002, 0x0010, b"UI", ui("1.2.840.10008.1.2.1.99"))
        + element(0x0002, 0x0012, b"UI", ui("1.2.3.4"))
    )
    meta = element(0x0002, 0x0000, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM" + meta)
        handle.write(
            deflater.compress(
                element(0x0008, 0x0016, b"UI", ui("1.2.840.10008.5.1.4.1.1.2"))
                + element(0x0009, 0x0010, b"LO", b"BOMB")
                + struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, inflated)
            )
        )
        zeros = bytes(1 << 22)
        for _ in range(inflated // len(zeros)):
            handle.write(deflater.compress(zeros))
        handle.write(deflater.flush())
    return path


def test_deflated_dicom_bomb_is_refused_within_a_small_memory_budget(tmp_path, monkeypatch, cli):
    from voxpipe_plugins.deid.reading import read_dicom
    from voxpipe_plugins.io_dicom.headers import header_of

    bomb = _deflated_bomb(tmp_path / "in" / "bomb.dcm")
    assert bomb.stat().st_size < 2**21
    peak, caught = _peak(lambda: read_dicom(bomb, 2**26))
    assert isinstance(caught, ResourceLimitError) and peak < MEMORY_BUDGET
    monkeypatch.setenv("VOXPIPE_MAX_GIB", "0.0625")
    peak, caught = _peak(lambda: header_of(bomb))
    assert isinstance(caught, ResourceLimitError) and peak < MEMORY_BUDGET
    result = cli("deid", tmp_path / "in", tmp_path / "out", *key_args(tmp_path / "k.key"), "--max-gib", "0.0625")
    assert result.exit_code == 1 and "decompression bomb" in result.stdout and not list((tmp_path / "out").rglob("*.dcm"))


def test_oversized_dicom_declared_dimensions_are_refused_before_decoding(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from voxpipe_plugins.io_dicom.loader import DicomLoader, SeriesError, discover

    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = (
        CTImageStorage,
        generate_uid(),
        ExplicitVRLittleEndian,
    )
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 100000
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = b"\0" * 64
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "huge.dcm", enforce_file_format=True)
    found = discover(tmp_path / "in")
    case = {"source": found.cases[0], "case_id": "case-x", "output_dir": tmp_path}
    peak, caught = _peak(lambda: DicomLoader(max_gib=1)(case))
    assert isinstance(caught, SeriesError) and "above the 1 GiB cap" in str(caught)
    assert peak < MEMORY_BUDGET


def test_nifti_cap_is_a_loader_parameter(tmp_path, cli, write_config):
    from tests.conftest import write_nifti

    write_nifti(tmp_path / "in" / "a.nii.gz", np.zeros((64, 64, 64), np.float32))  # 1 MiB as float32
    config = write_config("version: 1\nname: x\nstages:\n  - use: load.nifti\n    with: {max_gib: 0.0005}\n  - use: write.nifti\n")
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert result.exit_code == 1 and "above the" in result.stderr + result.stdout
