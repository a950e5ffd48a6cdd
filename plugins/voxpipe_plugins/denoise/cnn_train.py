"""The ``denoise`` trainer behind ``voxpipe train``: a denoise.cnn model from clean images and simulated noise.

Follows the segmentation trainer's conventions (deep/train.py): ``best`` / ``last``
safetensors with a JSON card, ``last.state.pt`` (optimiser state and history, loaded
``weights_only``) for ``--resume``, ``log.jsonl``, ``learning_curve.png``, one log line per
epoch with an ETA. Every epoch's randomness is seeded from (seed, epoch) only, so a resumed
run repeats what an uninterrupted one would have done.

Noise is simulated on the fly (:mod:`.noise_models`): Gaussian and Rician per patch, at a
σ drawn for each patch. Low-dose CT noise is costly (a radon / iradon pair per slice), so
each training slice gets a small bank of noise fields at a reference dose, computed once,
and each patch scales its field by √(d_ref / d) for its own dose d: the quantum noise's
standard deviation goes as 1/√dose (the Gaussian approximation of the Poisson counts).

Hybrid models (``guide: nlm``) need ``denoise.nlm``'s estimate of each noisy input, which
is computed on the whole image, as at inference: each training image gets a bank of
``guide_bank`` noisy copies at σ spread over ``sigma_range``, each with its estimated σ
and its NLM estimate, computed once; patches are cut from the same place in all three.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxpipe.progress import epochs_eta
from voxpipe_plugins.common.learning_curve import plot_learning_curve
from voxpipe_plugins.common.noise import estimate_sigma
from voxpipe_plugins.common.run_files import run_files
from voxpipe_plugins.deep.train import TrainingDataError, read_volume
from voxpipe_plugins.deep.weights import load_torch_file
from voxpipe_plugins.denoise.cnn_guide import guide_recipe, nlm_guide
from voxpipe_plugins.denoise.cnn_net import Architecture, Critic, ResidualDenoiser
from voxpipe_plugins.denoise.cnn_weights import architecture_of, load_model, save_model
from voxpipe_plugins.denoise.noise_models import lowdose_ct, robust_range, simulate

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".png", ".tif", ".tiff", ".jpg", ".jpeg")
CT_BANK = 2
"""Noise fields per training slice for ct-lowdose (each a radon/iradon pair, ~1.4 s for 256²)."""


# ---------------------------------------------------------------- data


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def find_images(path: Path) -> list[Path]:
    """Clean images: every image file under a folder (recursively), or the `image` column of a CSV."""
    if path.is_file() and path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "image" not in reader.fieldnames:
                raise TrainingDataError(f"{path}: a denoising CSV needs an `image` column (got {reader.fieldnames})")
            images = []
            for row_number, row in enumerate(reader, start=2):
                image = path.parent / (row["image"] or "").strip()
                if not _is_image(image):
                    raise TrainingDataError(f"{path}:{row_number}: {image} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
                images.append(image)
    elif path.is_dir():
        images = sorted(p for p in path.rglob("*") if _is_image(p))
    else:
        raise TrainingDataError(f"training data {path} not found: give a folder of clean images or a CSV with an `image` column")
    if not images:
        raise TrainingDataError(f"{path}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_array(path: Path) -> np.ndarray:
    """A clean image as a float32 array without channel axis (2D, or 3D for volumes)."""
    name = path.name.lower()
    try:
        if name.endswith((".png", ".tif", ".tiff", ".jpg", ".jpeg")):
            from skimage.io import imread

            array = np.asarray(imread(str(path)), dtype=np.float32)
            if array.ndim == 3 and array.shape[-1] in (3, 4):
                array = array[..., :3] @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)  # skimage's rgb2gray weights
        else:
            volume = read_volume(path, "training")
            if volume.shape[0] != 1:
                raise TrainingDataError(f"{path}: {volume.shape[0]} channels; give single-channel images")
            array = np.asarray(volume[0].detach().cpu().numpy(), dtype=np.float32)
    except TrainingDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - readers raise many types; name the file and what to do
        raise TrainingDataError(f"{path}: cannot be read as an image ({type(exc).__name__}); remove it or convert it") from None
    array = np.squeeze(array)
    if array.ndim not in (2, 3) or min(array.shape) < 8:
        raise TrainingDataError(f"{path}: shape {array.shape} is not a 2D or 3D image of at least 8 voxels per axis")
    if not np.isfinite(array).all():
        raise TrainingDataError(f"{path}: holds NaN or infinite values")
    return array


def as_items(arrays: list[np.ndarray], dims: int, volumes: bool = False) -> list[np.ndarray]:
    """2D models train on slices (3D images give theirs, across the last axis); 3D models on volumes.

    ``volumes``: keep 3D images whole for a 2D model too (hybrid models: the NLM guide is computed
    in 3D, as at inference, and the patches are cut from slices along every axis)."""
    items: list[np.ndarray] = []
    for array in arrays:
        if dims == 2 and not (volumes and array.ndim == 3):
            items += [array] if array.ndim == 2 else [array[..., k] for k in range(array.shape[-1])]
        elif array.ndim == 3:
            items.append(array)
    return [a for a in items if float(a.max() - a.min()) > 0]


# ---------------------------------------------------------------- metrics and plot


def psnr(output: np.ndarray, clean: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((output.astype(np.float64) - clean) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(output: np.ndarray, clean: np.ndarray, data_range: float = 1.0) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(clean.astype(np.float64), output.astype(np.float64), data_range=data_range))


def plot_curve(history: list[dict], path: Path) -> None:
    """Training loss (left axis) and validation PSNR (right axis) against epoch."""
    plot_learning_curve(history, path, "val_psnr", "validation PSNR, dB (right axis)")


# ---------------------------------------------------------------- patches


class PatchSampler:
    """Clean images in network units, and (noisy, clean, level) patch batches from them."""

    def __init__(self, items: list[np.ndarray], params: Any, rng: np.random.Generator) -> None:
        self.p, self.noise = params, params.noise
        self.images: list[np.ndarray] = []
        self.banks: list[list[np.ndarray]] = []
        self.bank_levels: list[list[float]] = []
        self.guides: list[list[np.ndarray]] = []
        self.dose_ref = math.sqrt(params.dose_range[0] * params.dose_range[1])
        self.hybrid = getattr(params, "guide", "none") == "nlm"
        for item in items:
            low, scale = robust_range(item, self.noise)
            self.images.append(((item - low) / scale).astype(np.float32))
            if self.hybrid:
                noisy, guides, levels = guided_bank(self.images[-1], params, rng)
                self.banks.append(noisy)
                self.guides.append(guides)
                self.bank_levels.append(levels)
            elif self.noise == "ct-lowdose":
                bank = [(lowdose_ct(s, self.dose_ref, rng) - s) / scale for s in self._slices(item) for _ in range(CT_BANK)]
                fields = self._stack(item, bank)
                image = self.images[-1]
                self.banks.append(fields)
                # the level the stage will estimate on the whole noisy image, at the reference dose
                self.bank_levels.append([estimate_sigma(torch.from_numpy(image + f)) for f in fields])
        self.weights = np.array([a.size for a in self.images], dtype=np.float64)
        self.weights /= self.weights.sum()

    @staticmethod
    def _slices(item: np.ndarray) -> list[np.ndarray]:
        return [item] if item.ndim == 2 else [item[..., k] for k in range(item.shape[-1])]

    @staticmethod
    def _stack(item: np.ndarray, bank: list[np.ndarray]) -> list[np.ndarray]:
        if item.ndim == 2:
            return bank
        per = CT_BANK
        return [np.stack([bank[k * per + r] for k in range(item.shape[-1])], axis=-1) for r in range(per)]

    def _crop(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, float, np.ndarray | None]:
        image = self.images[index]
        plane: tuple[int, int] | None = None
        if image.ndim > self.p.spatial_dims:  # a volume kept whole for a 2D model: one slice along a random axis
            axis = int(rng.integers(image.ndim))
            plane = (axis, int(rng.integers(image.shape[axis])))
            image = np.take(image, plane[1], axis=plane[0])
        size = self.p.patch_size
        pads = [(0, max(0, size - n)) for n in image.shape]
        corner = [int(rng.integers(0, max(1, n - size + 1))) for n in image.shape]
        window = tuple(slice(c, c + size) for c in corner)
        clean = np.pad(image, pads, mode="reflect")[window]
        field, level, guide = None, 0.0, None
        if self.banks:
            which = int(rng.integers(len(self.banks[index])))

            def cut(array: np.ndarray) -> np.ndarray:
                return np.pad(array if plane is None else np.take(array, plane[1], axis=plane[0]), pads, mode="reflect")[window]

            field = cut(self.banks[index][which])
            level = self.bank_levels[index][which]
            if self.hybrid:
                guide = cut(self.guides[index][which])
        return clean, field, level, guide

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(noisy, clean, levels, guides or None): (B, 1, ...) patches in network units, (B,) noise levels."""
        noisy, clean, levels, guides = [], [], [], []
        for _ in range(self.p.batch_size):
            index = int(rng.choice(len(self.images), p=self.weights))
            patch, field, level, guide = self._crop(index, rng)
            if guide is not None and field is not None:
                patch_noisy = field  # the bank holds whole noisy images here
            elif field is not None:
                dose = math.exp(rng.uniform(*np.log(self.p.dose_range)))
                patch_noisy = patch + field * math.sqrt(self.dose_ref / dose)
                level *= math.sqrt(self.dose_ref / dose)
            else:
                sigma = float(rng.uniform(*self.p.sigma_range))
                patch_noisy = simulate(patch, self.noise, sigma, rng)
            for axis in range(patch.ndim):  # flips: the noise models are symmetric
                if rng.random() < 0.5:
                    patch, patch_noisy = np.flip(patch, axis), np.flip(patch_noisy, axis)
                    guide = np.flip(guide, axis) if guide is not None else None
            if patch.ndim == 2 and rng.random() < 0.5:
                patch, patch_noisy = patch.T, patch_noisy.T
                guide = guide.T if guide is not None else None
            level = level if field is not None else sigma
            noisy.append(np.ascontiguousarray(patch_noisy))
            clean.append(np.ascontiguousarray(patch))
            levels.append(level)
            if guide is not None:
                guides.append(np.ascontiguousarray(guide))
        return (
            torch.from_numpy(np.stack(noisy))[:, None].float(),
            torch.from_numpy(np.stack(clean))[:, None].float(),
            torch.tensor(levels, dtype=torch.float32),
            torch.from_numpy(np.stack(guides))[:, None].float() if guides else None,
        )


def guided_bank(clean: np.ndarray, params: Any, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], list[float]]:
    """``guide_bank`` noisy copies of a clean image (network units) at σ spread evenly over ``sigma_range``
    (one draw per stratum), with the σ the stage would estimate on each and its NLM estimate at that σ."""
    low, high = params.sigma_range
    count = params.guide_bank
    noisy, guides, levels = [], [], []
    for k in range(count):
        sigma = low + (k + float(rng.random())) / count * (high - low)
        image = simulate(clean, params.noise, sigma, rng)
        level = estimate_sigma(torch.from_numpy(image), rician=params.noise == "rician")
        guide = nlm_guide(torch.from_numpy(image), level, (1.0,) * image.ndim, params.noise).numpy()
        noisy.append(image.astype(np.float32))
        guides.append(guide.astype(np.float32))
        levels.append(float(level))
    return noisy, guides, levels


def validation_set(items: list[np.ndarray], params: Any, seed: int) -> list[dict[str, Any]]:
    """Each validation image with one fixed noisy copy at ``val_level``, in network units."""
    rng = np.random.default_rng([seed, 999_983])
    out = []
    for item in items:
        low, scale = robust_range(item, params.noise)
        if params.noise == "ct-lowdose":
            level = params.val_level or math.sqrt(params.dose_range[0] * params.dose_range[1])
            noisy = (simulate(item, params.noise, level, rng) - low) / scale
            sigma = estimate_sigma(torch.from_numpy(noisy))
        else:
            sigma = params.val_level or 0.5 * (params.sigma_range[0] + params.sigma_range[1])
            noisy = simulate((item - low) / scale, params.noise, sigma, rng)
        entry = {"clean": ((item - low) / scale).astype(np.float32), "noisy": noisy.astype(np.float32), "sigma": float(sigma)}
        if getattr(params, "guide", "none") == "nlm":  # as at inference: σ estimated, NLM on the whole image
            entry["sigma"] = estimate_sigma(torch.from_numpy(entry["noisy"]), rician=params.noise == "rician")
            entry["guide"] = nlm_guide(torch.from_numpy(entry["noisy"]), entry["sigma"], (1.0,) * noisy.ndim, params.noise).numpy()
        out.append(entry)
    return out


# ---------------------------------------------------------------- trainer


class DenoiseTrainer:
    """Built by ``voxpipe train`` with the ``training:`` parameters, the validated config and the run context."""

    def __init__(self, params, config, context) -> None:
        self.params, self.config, self.context = params, config, context
        self.arch = Architecture(spatial_dims=params.spatial_dims, features=params.features, depth=params.depth, guide=params.guide)
        device = str(context.device or "cpu")
        self.device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))

    def _split(self) -> tuple[list[Path], list[Path]]:
        images = find_images(self.context.resolve_path(self.params.data))
        if self.params.val_data:
            return images, find_images(self.context.resolve_path(self.params.val_data))
        if len(images) < 2:
            raise TrainingDataError(f"{self.params.data}: at least 2 images are needed to hold one out for validation (or set val_data)")
        order = np.random.default_rng(self.params.seed).permutation(len(images))
        n_val = min(len(images) - 1, max(1, round(self.params.val_fraction * len(images))))
        return [images[i] for i in sorted(order[n_val:])], [images[i] for i in sorted(order[:n_val])]

    def _load(self, paths: list[Path], what: str) -> list[np.ndarray]:
        items = as_items([read_array(p) for p in paths], self.arch.spatial_dims, volumes=self.arch.guide == "nlm")
        if not items:
            raise TrainingDataError(f"no usable {what} images for a {self.arch.spatial_dims}D model (3D models need volumes)")
        _log(f"loaded {len(paths)} {what} images ({len(items)} items: 2D slices or whole volumes)")
        return items

    def _card(self, epoch: int, best: float, best_epoch: int, entry: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
        p = self.params
        return {
            "task": "denoise",
            "architecture": self.arch.to_dict(),
            "noise": p.noise,
            "adversarial": p.adversarial,
            **({"guide": guide_recipe()} if p.guide == "nlm" else {}),
            "epoch": epoch,
            "best_psnr": best,
            "best_epoch": best_epoch,
            "val_psnr": entry.get("val_psnr"),
            "val_ssim": entry.get("val_ssim"),
            "val_psnr_noisy": entry.get("val_psnr_noisy"),
            "seed": p.seed,
            "training": p.model_dump(exclude={"data", "val_data", "vgg_weights", "init_weights"}),
            "data_counts": counts,
            "config": Path(str(self.config.source)).name,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _predict(self, model: ResidualDenoiser, noisy: np.ndarray, sigma: float, guide: np.ndarray | None = None) -> np.ndarray:
        from monai.inferers import sliding_window_inference

        if noisy.ndim > self.arch.spatial_dims:  # a volume for a 2D model: slice by slice across the last axis
            planes = [self._predict(model, noisy[..., k], sigma, None if guide is None else guide[..., k]) for k in range(noisy.shape[-1])]
            return np.stack(planes, axis=-1)
        x = torch.from_numpy(np.stack([noisy] if guide is None else [noisy, guide]))[None].to(self.device)
        roi = [min(128 if self.arch.spatial_dims == 2 else 64, n) for n in noisy.shape]
        with torch.inference_mode():
            out = sliding_window_inference(
                x, roi, 4, lambda t: model(t[:, :1], sigma, t[:, 1:] if t.shape[1] > 1 else None), overlap=0.25, mode="gaussian"
            )
        return out[0, 0].float().cpu().numpy()

    def run(self, output_dir: Path, resume: bool = False) -> dict[str, Any]:
        from voxpipe_plugins.denoise.cnn_perceptual import Perceptual, gradient_penalty

        started = time.perf_counter()
        p = self.params
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        last_path, best_path, state_path = run_files(output_dir, resume, TrainingDataError)
        if p.threads:
            torch.set_num_threads(p.threads)
        torch.manual_seed(p.seed)
        train_paths, val_paths = self._split()
        train_items, val_items = self._load(train_paths, "training"), self._load(val_paths, "validation")
        counts = {
            "train_images": len(train_paths),
            "val_images": len(val_paths),
            "train_items": len(train_items),
            "val_items": len(val_items),
        }
        if p.noise == "ct-lowdose":
            _log(f"simulating {CT_BANK} low-dose noise fields per training slice (radon/iradon)...")
        sampler = PatchSampler(train_items, p, np.random.default_rng([p.seed, 1]))
        val_set = validation_set(val_items, p, p.seed)

        model = ResidualDenoiser(self.arch).to(self.device)
        if p.init_weights and not resume:
            init, _ = load_model(self.context.resolve_path(p.init_weights))
            if init.arch != self.arch:
                raise TrainingDataError(f"init_weights is a {init.arch} model, the config asks for {self.arch}")
            model.load_state_dict(init.state_dict())
        optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
        gan = p.adversarial == "wgan-gp"
        critic = Critic(self.arch.spatial_dims).to(self.device) if gan else None
        critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9)) if critic is not None else None
        perceptual = (
            Perceptual(self.arch.spatial_dims, p.seed, self.context.resolve_path(p.vgg_weights) if p.vgg_weights else None).to(self.device)
            if gan
            else None
        )
        history: list[dict] = []
        start_epoch, best, best_epoch = 1, -math.inf, 0
        if resume:
            resumed, card = load_model(last_path)
            if resumed.arch != self.arch or card.get("noise") != p.noise or card.get("adversarial") != p.adversarial:
                raise TrainingDataError(
                    f"{last_path.name} was trained with other settings (architecture, noise or adversarial); use another -o"
                )
            model.load_state_dict(resumed.state_dict())
            state = load_torch_file(state_path)
            optimizer.load_state_dict(state["optimizer"])
            if critic is not None and critic_opt is not None:
                critic.load_state_dict(state["critic"])
                critic_opt.load_state_dict(state["critic_optimizer"])
            history = json.loads(state["history"])
            start_epoch, best, best_epoch = int(card["epoch"]) + 1, float(card["best_psnr"]), int(card["best_epoch"])
            _log(f"resuming after epoch {start_epoch - 1} (best PSNR {best:.2f} dB at epoch {best_epoch})")
        pixel_loss = F.mse_loss if p.loss == "mse" else F.l1_loss
        total_steps = p.epochs * p.steps_per_epoch
        seconds_at_start = history[-1]["seconds"] if history else 0.0
        epoch = start_epoch - 1
        for epoch in range(start_epoch, p.epochs + 1):
            epoch_start = time.perf_counter()
            rng = np.random.default_rng([p.seed, epoch])
            torch.manual_seed(p.seed * 100_003 + epoch)
            model.train()
            losses = []
            for step in range(p.steps_per_epoch):
                global_step = (epoch - 1) * p.steps_per_epoch + step
                for group in optimizer.param_groups:
                    group["lr"] = p.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * global_step / total_steps)))
                noisy, clean, levels, guides = (t.to(self.device) if t is not None else None for t in sampler.batch(rng))
                if critic is not None and critic_opt is not None:
                    with torch.no_grad():
                        fake = model(noisy, levels, guides)
                    for _ in range(p.critic_steps):
                        critic_opt.zero_grad(set_to_none=True)
                        d_loss = critic(fake).mean() - critic(clean).mean() + p.gp_lambda * gradient_penalty(critic, clean, fake)
                        d_loss.backward()
                        critic_opt.step()
                optimizer.zero_grad(set_to_none=True)
                output = model(noisy, levels, guides)
                loss = pixel_loss(output, clean)
                if critic is not None and perceptual is not None:
                    for q in critic.parameters():
                        q.requires_grad_(False)
                    loss = loss + p.perceptual_weight * perceptual(output, clean) - p.adv_weight * critic(output).mean()
                    for q in critic.parameters():
                        q.requires_grad_(True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            model.eval()
            outputs = [self._predict(model, v["noisy"], v["sigma"], v.get("guide")) for v in val_set]
            entry: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "val_psnr": round(float(np.mean([psnr(o, v["clean"]) for o, v in zip(outputs, val_set)])), 4),
                "val_ssim": round(float(np.mean([ssim(o, v["clean"]) for o, v in zip(outputs, val_set)])), 4),
                "val_psnr_noisy": round(float(np.mean([psnr(v["noisy"], v["clean"]) for v in val_set])), 4),
            }
            if entry["val_psnr"] > best:
                best, best_epoch = entry["val_psnr"], epoch
                save_model(model, best_path, self._card(epoch, best, best_epoch, entry, counts))
            entry["seconds"] = round(seconds_at_start + time.perf_counter() - started, 3)
            entry["epoch_seconds"] = round(time.perf_counter() - epoch_start, 3)
            history.append(entry)
            save_model(model, last_path, self._card(epoch, best, best_epoch, entry, counts))
            state = {"optimizer": optimizer.state_dict(), "history": json.dumps(history)}
            if critic is not None and critic_opt is not None:
                state.update(critic=critic.state_dict(), critic_optimizer=critic_opt.state_dict())
            from voxpipe.atomic import atomic_path

            with atomic_path(state_path) as tmp:
                torch.save(state, tmp)
            with (output_dir / "log.jsonl").open("a") as log:
                log.write(json.dumps(entry) + "\n")
            plot_curve(history, output_dir / "learning_curve.png")
            _log(
                f"epoch {epoch}/{p.epochs}  loss {entry['loss']:.5f}  val PSNR {entry['val_psnr']:.2f} dB "
                f"(noisy {entry['val_psnr_noisy']:.2f})  SSIM {entry['val_ssim']:.4f}  best {best:.2f} (epoch {best_epoch})  "
                f"{entry['epoch_seconds']:.1f} s{epochs_eta(history, p.epochs)}"
            )
            if p.max_minutes is not None and (time.perf_counter() - started) / 60 > p.max_minutes:
                _log(f"stopping: max_minutes ({p.max_minutes}) reached")
                break
        try:
            (output_dir / ".voxpipe").rmdir()  # the CLI's writability probe folder, empty
        except OSError:
            pass
        return {
            "best_psnr": round(best, 4),
            "best_epoch": best_epoch,
            "epochs": epoch,
            "checkpoint": str(best_path if best_path.exists() else last_path),
            "last": str(last_path),
            "learning_curve": str(output_dir / "learning_curve.png"),
            **counts,
            "seconds": round(time.perf_counter() - started, 1),
        }


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


__all__ = ["DenoiseTrainer", "architecture_of", "find_images", "psnr", "read_array", "ssim"]
