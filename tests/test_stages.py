"""Built-in stages measured against independent readers and known ground truth."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import nibabel_data, write_nifti
from voxpipe.cases import CaseSource
from voxpipe_plugins.samples.data import ellipsoid_phantom


def case_for(path, tmp_path, kind="nifti"):
    out = tmp_path / "case-out"
    out.mkdir(exist_ok=True)
    return {"case_id": "case-test", "source": CaseSource(str(path), (path,), kind), "output_dir": out, "history": []}


def test_nifti_loader_matches_monai_loadimage(tmp_path):
    from monai.transforms import LoadImage

    from voxpipe_plugins.io_nifti.reader import NiftiLoader

    path = nibabel_data("anatomical.nii")  # real T1 MRI, big-endian int16
    ours = NiftiLoader()(case_for(path, tmp_path))["image"]
    theirs = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    assert ours.shape == theirs.shape == (1, 33, 41, 25)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), nib.load(path).affine)
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy())
    assert ours.meta["filename_or_obj"] == "case-test", "the path must not travel in metadata"


def test_nifti_4d_becomes_channels(tmp_path):
    from voxpipe_plugins.io_nifti.reader import read_nifti

    data = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    image = read_nifti(write_nifti(tmp_path / "4d.nii.gz", data))
    assert image.shape == (5, 2, 3, 4)
    np.testing.assert_array_equal(image[4].numpy(), data[..., 4])


def test_nifti_writer_round_trip_and_clean_header(tmp_path):
    from voxpipe_plugins.io_nifti.reader import read_nifti
    from voxpipe_plugins.io_nifti.writer import NiftiWriter

    affine = np.array([[0, -0.9, 0, 10], [0.9, 0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    data = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"Patient Doe^Jane"
    nib.save(img, str(tmp_path / "in.nii.gz"))
    case = case_for(tmp_path / "in.nii.gz", tmp_path)
    case["image"] = read_nifti(tmp_path / "in.nii.gz")
    case["label"] = case["image"].__class__(
        (case["image"] > 0.5).to(torch.uint8), affine=case["image"].affine, meta={"label_names": {0: "background", 1: "foreground"}}
    )
    NiftiWriter(keys=["image", "label"])(case)
    written = nib.load(case["output_dir"] / "image.nii.gz")
    np.testing.assert_allclose(written.get_fdata(), data, rtol=1e-6)
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert int(written.header["sform_code"]) > 0 and int(written.header["qform_code"]) > 0
    np.testing.assert_allclose(written.get_qform(), affine, atol=1e-5)
    assert b"Doe" not in written.header["descrip"].tobytes()
    label = nib.load(case["output_dir"] / "label.nii.gz")
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), (data > 0.5).astype(np.uint8))
    assert json.loads((case["output_dir"] / "label.labels.json").read_text()) == {"0": "background", "1": "foreground"}
    assert not [p for p in case["output_dir"].iterdir() if ".tmp" in p.name]


def test_image2d_loader_matches_monai(tmp_path):
    from monai.transforms import LoadImage
    from skimage.data import camera

    from voxpipe_plugins.io_image.reader import Image2DLoader

    pixels = camera()[:300, :200]
    Image.fromarray(pixels).save(tmp_path / "cam.png")
    ours = Image2DLoader()(case_for(tmp_path / "cam.png", tmp_path, "image"))["image"]
    theirs = LoadImage(image_only=True, ensure_channel_first=True)(str(tmp_path / "cam.png"))
    assert ours.shape == theirs.shape == (1, 200, 300)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(ours[0].numpy().T, pixels)


def test_image2d_rgb_and_gray_modes(tmp_path):
    from voxpipe_plugins.io_image.reader import read_image2d

    rgb = np.zeros((10, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert read_image2d(tmp_path / "red.png").shape == (3, 20, 10)
    gray = read_image2d(tmp_path / "red.png", mode="gray")
    assert gray.shape == (1, 20, 10) and abs(float(gray.mean()) - 0.299 * 200) < 1


def psnr(clean, test):
    return 10 * np.log10(1.0 / np.mean((clean - test) ** 2))


def test_gaussian_respects_spacing_and_denoises(tmp_path):
    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.denoise.gaussian import GaussianDenoise

    clean = ellipsoid_phantom(noise=0.0)
    noisy = ellipsoid_phantom(noise=0.1, seed=3)
    image = make_metatensor(noisy[None], np.diag([1.0, 1.0, 2.0, 1.0]))
    result = GaussianDenoise(sigma_mm=1.0)({"image": image, "history": []})
    assert result["history"][-1]["sigma_voxels"] == [1.0, 1.0, 0.5]
    smoothed = result["image"]
    assert torch.equal(smoothed.affine, image.affine)
    assert psnr(clean, smoothed[0].numpy()) > psnr(clean, noisy) + 5


def test_otsu_segments_phantom(tmp_path):
    from skimage.data import shepp_logan_phantom

    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.segment.otsu import OtsuSegmenter

    clean = shepp_logan_phantom().astype(np.float32)
    truth = clean > 0.5  # the skull (1.0) is the class Otsu separates from soft tissue (<= 0.4) and air
    noisy = clean + np.random.default_rng(0).normal(0, 0.05, clean.shape).astype(np.float32)
    case = OtsuSegmenter()({"image": make_metatensor(noisy.T[None], np.eye(4)), "history": []})
    label = case["label"][0].numpy().T.astype(bool)
    dice = 2 * (label & truth).sum() / (label.sum() + truth.sum())
    assert dice > 0.95, dice
    assert case["label"].meta["label_names"] == {0: "background", 1: "foreground"}
    assert case["label"].dtype == torch.uint8


def test_preview_orientation_is_radiological(tmp_path):
    """A bright blob at the patient's right-anterior shows at the image's top-left, whatever the affine."""
    from voxpipe_plugins.io_nifti.reader import read_nifti
    from voxpipe_plugins.preview.render import PreviewWriter

    data = np.zeros((20, 20, 5), dtype=np.float32)
    # LAS affine (x flipped, like nibabel's anatomical.nii): voxel i=0 lies at patient right... here x=+19.
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 19
    data[0:4, 16:20, 2] = 1.0  # i small -> x large -> patient right; j large -> anterior
    image = read_nifti(write_nifti(tmp_path / "blob.nii.gz", data, affine))
    case = case_for(tmp_path / "blob.nii.gz", tmp_path)
    case.update(image=image, label=None)
    PreviewWriter(label_key=None, slice="middle", min_size=40)(case)
    picture = np.asarray(Image.open(case["output_dir"] / "preview.png").convert("L")).astype(float)
    rows, cols = np.nonzero(picture > 128)
    assert rows.mean() < 0.25 * picture.shape[0] and cols.mean() < 0.25 * picture.shape[1]


def test_stages_work_in_plain_monai_compose(tmp_path):
    from monai.transforms import Compose

    from voxpipe_plugins.denoise.gaussian import GaussianDenoise
    from voxpipe_plugins.intensity.scale import IntensityScale
    from voxpipe_plugins.io_nifti.reader import NiftiLoader
    from voxpipe_plugins.segment.otsu import OtsuSegmenter

    path = write_nifti(tmp_path / "p.nii.gz", ellipsoid_phantom(shape=(32, 32, 16), noise=0.02), np.diag([2, 2, 4, 1.0]))
    pipeline = Compose([NiftiLoader(), IntensityScale(), GaussianDenoise(sigma_mm=2.0), OtsuSegmenter()])
    case = pipeline(case_for(path, tmp_path))
    assert case["image"].shape == case["label"].shape == (1, 32, 32, 16)
    assert 0 <= float(case["image"].min()) and float(case["image"].max()) <= 1
    assert [h["op"] for h in case["history"]] == ["load.nifti", "intensity.scale", "denoise.gaussian", "segment.otsu"]


@pytest.mark.parametrize("mode, lower, upper", [("percentile", 1, 99), ("range", 0.2, 0.8), ("minmax", 0, 1)])
def test_intensity_scale_modes(mode, lower, upper):
    from voxpipe_plugins.common.tensors import make_metatensor
    from voxpipe_plugins.intensity.scale import IntensityScale

    values = np.linspace(0, 1, 1000, dtype=np.float32).reshape(1, 10, 10, 10)
    out = IntensityScale(mode=mode, lower=lower, upper=upper)({"image": make_metatensor(values, np.eye(4)), "history": []})["image"].numpy()
    reference = {"percentile": np.percentile(values, [1, 99]), "range": (0.2, 0.8), "minmax": (0, 1)}[mode]
    expected = np.clip((values - reference[0]) / (reference[1] - reference[0]), 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)
