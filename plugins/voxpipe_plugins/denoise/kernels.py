"""Torch implementations of the edge-preserving denoisers: non-local means, bilateral, TV.

Plain torch on 2D (X×Y) or 3D (X×Y×Z) single-channel float tensors, on whatever device
the tensor lives (CPU threads or CUDA). The stages in this package handle channels,
spacing, noise estimation and recording; these functions only compute.

Non-local means and the bilateral filter share one engine, :func:`shift_filter`: both are
weighted averages over a search window, ``out(x) = Σ_d w(x, x+d) u(x+d) / Σ_d w(x, x+d)``,
and both weights are symmetric, ``w(x, x+d) = w(x+d, x)``. So the engine loops over half
of the offsets ``d`` (the other half is the same weight, shifted), and for each offset
works on whole arrays at once:

1. ``D = bias - (u(x) - u(x+d))²`` for every voxel (one subtraction, one fused multiply-add);
2. NLM only: a separable box sum of ``D`` over the patch (2 additions per axis for a
   3-voxel patch), giving minus the patch distance: the "fast" NLM of Darbon et al. (2008),
   as in scikit-image's ``fast_mode``, whose cost does not grow with the patch size;
3. ``w = exp(min(D, 0))`` (NLM) or ``exp(D)`` (bilateral, whose bias is the log of the
   spatial Gaussian);
4. NLM with patch-wise aggregation: another box sum of ``w`` (every patch that contains a
   voxel votes for it, as in the blockwise NLM of Coupé et al. 2008), which gains 1-4 dB
   over the pixel-wise average at the same search window for about 50% more time;
5. accumulate ``w·u(x+d)`` and ``w`` at ``x``, and ``w·u(x)`` and ``w`` at ``x+d``.

On the CPU, small work (up to ``SINGLE_THREAD_WORK`` voxel-offsets: a 1 mm brain block
of 148×184×16 at the default 3×3×3 window, ~0.05 s) runs on the calling thread alone,
untiled, with torch's intra-op threads off: a second thread saves at most tens of
milliseconds there and, on a shared machine, costs far more. Larger work is cut into
tiles (``CPU_TILE_VOXELS``, at least one per thread) along the leading axes; all offsets
run on one tile before the next, so a tile's inputs stay in cache across the offsets.
The tiles are shared out to one Python thread per core (contiguous runs of tiles, each
thread with its own accumulators over the rows it can reach, summed at the end), with
torch's own intra-op threading set to one for the whole call (the padding and the final
division included). Every torch call releases the GIL, so the threads run in parallel,
and there is no fork/join barrier around each of the ~14 000 operations. That barrier is
what makes torch's intra-op threading fragile on a busy machine: with one other busy
process on the 2-core benchmark machine it made NLM 3-25x slower, with two 30-50x,
where worker threads slow down in proportion to the CPU they get. On an idle machine
intra-op threading is faster on large volumes (0.48 s against 0.75 s on the 64×128×128
benchmark volume; each operation's data is split between the cores' caches, and the
worker threads serialise ~100 µs of Python and dispatch per tile and offset on the
GIL); ``threads=1`` selects it.
On CUDA the whole image is one tile on one thread (launch overhead, not bandwidth, is
what counts there). Memory beyond the input: four padded copies (scaled input, values,
two accumulators), per-thread accumulators over each thread's rows (about two more
copies), and a few tile-sized temporaries.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from voxpipe_plugins.common.threads import configured_threads, single_threaded_torch

CPU_TILE_VOXELS = 1 << 19
"""Tile budget on the CPU (voxels of the search domain; tiles come out at 0.5-1x this, and
at least one per thread). Measured on the 64×128×128 benchmark volume, 2 threads: worker
threads 2^20 0.73 s, 2^19 0.75-0.78 s, 2^18 0.92 s, 2^17 1.2 s (smaller tiles pay the
~100 µs of Python and dispatch per tile and offset, which the threads serialise on the
GIL); torch intra-op threads (``threads=1``) 2^19 0.48 s, 2^20 0.60 s, untiled 0.71 s."""

SINGLE_THREAD_WORK = 1 << 24
"""CPU work (search-domain voxels × offsets visited) up to which a filter runs on the calling thread
alone, untiled, with torch's intra-op threads off for the whole call (the 1 mm benchmark block,
148×184×16, is 5.7 M; a 100³ volume 17 M). Below it the work is tens of milliseconds, and on a
shared machine any second thread costs more than it saves: torch's OpenMP workers spin at each
operation's barrier, burning the core the other threads need. Measured on the 2-core benchmark
machine with two other busy processes: 34k-voxel T1 (2 mm) 10 ms here against 26-56 ms with two
threads; the 1 mm block 52-58 ms against 300+ ms with worker threads whose main thread had used
two intra-op threads just before (docs/denoising.md, "Speed")."""

TV_ONE_THREAD_VOXELS = 1 << 21
"""TV (Chambolle) on the CPU runs on the calling thread, torch's intra-op threads off, up to this
many voxels: its ~15 whole-image operations per iteration each wait at an OpenMP barrier
when the machine is busy. Measured with two other busy processes on the 2-core machine
(same iterations, same result): 34k-voxel T1 25-29 ms on one thread against 0.12-2.2 s on
two; 1 mm block (436k) 159 ms against 0.25-2.6 s; even 4.6 M voxels 0.93 s against 2.6 s."""

WEIGHT_FLOOR = 30.0
"""NLM weights below exp(-30) are clamped there: no denormals (slow), no effect on the average."""


def _pad(x: torch.Tensor, pads: Sequence[int]) -> torch.Tensor:
    """Reflect-pad a 2D/3D tensor by ``pads[a]`` on both sides of axis ``a`` (numpy 'reflect')."""
    if not any(pads):
        return x.contiguous()
    flat = [p for p in reversed(pads) for _ in (0, 1)]
    return F.pad(x[None, None], flat, mode="reflect")[0, 0].contiguous()


def _box_sum(x: torch.Tensor, axis: int, lo: int, hi: int) -> torch.Tensor:
    """Sum of ``x[i+lo .. i+hi]`` along ``axis`` ('valid': the axis shrinks by ``hi - lo``)."""
    k = hi - lo + 1
    if k == 1:
        return x
    n = x.shape[axis] - k + 1
    if k <= 8:
        out = x.narrow(axis, 0, n) + x.narrow(axis, 1, n)
        for i in range(2, k):
            out.add_(x.narrow(axis, i, n))
        return out
    c = torch.cumsum(x, axis)
    out = torch.empty_like(c.narrow(axis, 0, n))
    out.narrow(axis, 0, 1).copy_(c.narrow(axis, k - 1, 1))
    torch.sub(c.narrow(axis, k, n - 1), c.narrow(axis, 0, n - 1), out=out.narrow(axis, 1, n - 1))
    return out


def _fast_exp_skimage(x: torch.Tensor) -> torch.Tensor:
    """Schraudolph's exp approximation as scikit-image's NLM uses it (reference mode only)."""
    high = torch.trunc(1512775.3951951856938 * x.double()).to(torch.int64) + 1072632447
    return (high << 32).view(torch.float64)


@dataclass(frozen=True)
class _Plan:
    """Geometry of a shift filter: radii per axis and the offsets to visit."""

    patch_lo: tuple[int, ...]
    patch_hi: tuple[int, ...]
    search: tuple[int, ...]
    aggregate: tuple[int, ...]

    @property
    def pad(self) -> tuple[int, ...]:
        return tuple(s + q + max(-lo, hi) for s, q, lo, hi in zip(self.search, self.aggregate, self.patch_lo, self.patch_hi))

    def offsets(self) -> list[tuple[int, ...]]:
        """Half of the search window: offsets lexicographically greater than zero."""
        zero = (0,) * len(self.search)
        return [d for d in itertools.product(*[range(-s, s + 1) for s in self.search]) if d > zero]


def _tiles(extent: Sequence[int], budget: int | None) -> list[tuple[tuple[int, int], ...]]:
    """Split a box (lengths ``extent``) into tiles of at most ~``budget`` voxels.

    Only the leading axes are split (the last, contiguous one stays whole: long rows for
    vectorised loops; measured faster than also splitting it); each split halves the
    longest splittable tile edge, down to 8 voxels.
    """
    lengths = list(extent)
    if budget is not None:
        while math.prod(lengths) > budget:
            splittable = [a for a in range(len(lengths) - 1) if lengths[a] >= 16]
            if not splittable:
                break
            a = max(splittable, key=lambda i: lengths[i])
            lengths[a] = (lengths[a] + 1) // 2
    ranges = [[(start, min(start + length, total)) for start in range(0, total, length)] for total, length in zip(extent, lengths)]
    return list(itertools.product(*ranges))


def shift_filter(
    u: torch.Tensor,
    *,
    plan: _Plan,
    scale: float,
    bias: float,
    clamp_positive: bool,
    spatial_sigma: Sequence[float] | None = None,
    center_weight: float,
    values: torch.Tensor | None = None,
    tile_voxels: int | None = None,
    norm_count: float | None = None,
    reference: bool = False,
    threads: int | None = None,
) -> torch.Tensor:
    """The shared engine: a normalised, symmetric, offset-by-offset weighted average.

    Args:
        u: 2D/3D float tensor the weights are computed from.
        plan: patch window, search radius and aggregation radius per axis (voxels).
        scale: ``u`` is multiplied by this before differences are squared.
        bias: added to ``-(scaled difference)²`` before the patch sum.
        clamp_positive: NLM: clamp the summed value to ``<= 0`` before ``exp``.
        spatial_sigma: bilateral: per-axis σ (voxels) of a spatial Gaussian, added to the
            bias of each offset as its log, ``-Σ (d_a / σ_a)² / 2``.
        center_weight: weight of the zero offset for every voxel (before aggregation).
        values: what is averaged (default ``u``; the Rician NLM averages ``u²``).
        tile_voxels: CPU tiling budget, or None for one tile.
        norm_count, reference: scikit-image reproduction mode (tests only): distances
            divided by ``norm_count``, a hard cut-off at 5 and scikit-image's fast exp.
        threads: CPU worker threads over tiles (default: torch's intra-op thread count).
    """
    nd = u.ndim
    # Longest axis last: it is the contiguous one, and elementwise loops over short rows
    # (a 12-slice volume stored X x Y x Z) are an order of magnitude slower.
    order = sorted(range(nd), key=lambda a: u.shape[a])
    if order != list(range(nd)):
        inverse = [order.index(a) for a in range(nd)]
        pick = lambda t: tuple(t[a] for a in order)  # noqa: E731
        permuted = shift_filter(
            u.permute(order),
            plan=_Plan(pick(plan.patch_lo), pick(plan.patch_hi), pick(plan.search), pick(plan.aggregate)),
            scale=scale,
            bias=bias,
            clamp_positive=clamp_positive,
            spatial_sigma=None if spatial_sigma is None else pick(spatial_sigma),
            center_weight=center_weight,
            values=None if values is None else values.permute(order),
            tile_voxels=tile_voxels,
            norm_count=norm_count,
            reference=reference,
            threads=threads,
        )
        return permuted.permute(inverse).contiguous()
    shape = tuple(u.shape)
    pad = plan.pad
    threads = torch.get_num_threads() if threads is None else threads
    values = u if values is None else values
    work_dtype = torch.float64 if reference else torch.float32
    up = _pad(u.to(work_dtype) * scale, pad)
    vp = _pad(values.to(work_dtype), pad)
    offsets = plan.offsets()
    biases = [float(bias)] * len(offsets)
    if spatial_sigma is not None:
        biases = [b - 0.5 * sum((da / sa) ** 2 for da, sa in zip(d, spatial_sigma)) for b, d in zip(biases, offsets)]
    biases = [torch.tensor(b, dtype=work_dtype, device=u.device) for b in biases]
    r_lo, r_hi, q = plan.patch_lo, plan.patch_hi, plan.aggregate
    margin_lo = tuple(q[a] - r_lo[a] for a in range(nd))  # how far D reaches before x
    margin_hi = tuple(q[a] + r_hi[a] for a in range(nd))
    s0 = plan.search[0]

    def run_tiles(tiles: list, acc_v: torch.Tensor, acc_w: torch.Tensor, origin: int) -> None:
        """All offsets for each tile in turn; accumulators start at padded row ``origin`` of axis 0."""
        for tile in tiles:
            for d, b in zip(offsets, biases):
                lo, hi = [], []
                for a in range(nd):
                    lo.append(max(tile[a][0] - plan.search[a], -max(d[a], 0)))
                    hi.append(min(tile[a][1] - plan.search[a], shape[a] + max(-d[a], 0)))
                if any(high <= low for low, high in zip(lo, hi)):
                    continue
                # Region of D (x extended by patch and aggregation margins), in padded coordinates.
                xs = tuple(slice(pad[a] + lo[a] - margin_lo[a], pad[a] + hi[a] + margin_hi[a]) for a in range(nd))
                ys = tuple(slice(s.start + d[a], s.stop + d[a]) for a, s in enumerate(xs))
                diff = torch.sub(up[xs], up[ys])
                D = torch.addcmul(b, diff, diff, value=-1.0)
                del diff
                for a in range(nd):
                    D = _box_sum(D, a, r_lo[a], r_hi[a])
                if reference:
                    distance = D.clamp_(max=0).neg_() / norm_count
                    w = torch.where(distance > 5.0, torch.zeros_like(distance), _fast_exp_skimage(-distance))
                elif clamp_positive:
                    w = F.hardtanh_(D, -WEIGHT_FLOOR, 0.0).exp_()
                else:
                    w = D.exp_()
                for a in range(nd):
                    w = _box_sum(w, a, -q[a], q[a])
                xr = tuple(slice(pad[a] + lo[a], pad[a] + hi[a]) for a in range(nd))
                yr = tuple(slice(s.start + d[a], s.stop + d[a]) for a, s in enumerate(xr))
                xa = (slice(xr[0].start - origin, xr[0].stop - origin), *xr[1:])
                ya = (slice(yr[0].start - origin, yr[0].stop - origin), *yr[1:])
                acc_w[xa].add_(w)
                acc_w[ya].add_(w)
                acc_v[xa].addcmul_(w, vp[yr])
                acc_v[ya].addcmul_(w, vp[xr])

    # x ranges over image ∪ (image - d) for every offset: [-s, N + s) in image coordinates.
    extent = tuple(shape[a] + 2 * plan.search[a] for a in range(nd))
    parallel = u.device.type == "cpu" and threads > 1 and tile_voxels is not None
    if parallel:  # at least one tile per thread
        tile_voxels = min(tile_voxels, -(-math.prod(extent) // threads))
    tiles = _tiles(extent, tile_voxels)
    workers = min(threads, len(tiles)) if parallel else 1
    acc_v = torch.zeros_like(vp)
    acc_w = torch.zeros_like(vp)
    if workers <= 1:
        run_tiles(tiles, acc_v, acc_w, 0)
    else:
        # One contiguous run of tiles per worker thread, each with its own accumulators over
        # the rows it can write (its tiles' rows, reached from up to 2 x search below), and
        # torch single-threaded meanwhile: no barrier per operation, no write races.
        groups = [tiles[i * len(tiles) // workers : (i + 1) * len(tiles) // workers] for i in range(workers)]
        local = []
        for group in groups:
            first = max(0, pad[0] + min(t[0][0] for t in group) - 2 * s0)
            last = min(vp.shape[0], pad[0] + max(t[0][1] for t in group))
            local.append((group, first, torch.zeros_like(vp[first:last]), torch.zeros_like(vp[first:last])))
        with single_threaded_torch(), ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda job: run_tiles(job[0], job[2], job[3], job[1]), local))
        for _, first, lv, lw in local:
            acc_v[first : first + lv.shape[0]] += lv
            acc_w[first : first + lw.shape[0]] += lw
    core = tuple(slice(pad[a], pad[a] + shape[a]) for a in range(nd))
    center = center_weight * math.prod(2 * qa + 1 for qa in q)
    v0 = values.to(work_dtype)
    out = (acc_v[core] + center * v0) / (acc_w[core] + center)
    return out.to(torch.float32)


def _check_spatial(u: torch.Tensor) -> None:
    if u.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D spatial tensor, got shape {tuple(u.shape)}")


def fit_radii(shape: Sequence[int], *radii: Sequence[int]) -> list[tuple[int, ...]]:
    """Shrink per-axis radii until their sum (the padding) fits each axis: ``sum < size``.

    Reflect padding needs ``pad < size``; a 3D volume with one slice gets radius 0 there.
    The first radius given shrinks first (pass the search radius first: a smaller search
    window loses less than a smaller patch).
    """
    fitted = [list(r) for r in radii]
    for a, n in enumerate(shape):
        while sum(r[a] for r in fitted) > n - 1:
            for r in fitted:
                if r[a] > 0:
                    r[a] -= 1
                    break
    return [tuple(r) for r in fitted]


def default_tile(device: torch.device | str) -> int | None:
    return None if torch.device(device).type == "cuda" else CPU_TILE_VOXELS


def _one_thread(u: torch.Tensor, plan: _Plan, tile_voxels: int | None | str, threads: int | None) -> bool:
    """Whether an automatic CPU call is small enough for one thread (:data:`SINGLE_THREAD_WORK`)."""
    if u.device.type != "cpu" or tile_voxels != "auto" or threads is not None:
        return False
    extent = math.prod(n + 2 * s for n, s in zip(u.shape, plan.search))
    return extent * len(plan.offsets()) <= SINGLE_THREAD_WORK


def _threads_for(u: torch.Tensor, small: bool, tile_voxels: int | None, threads: int) -> contextlib.AbstractContextManager:
    """torch's intra-op threads off for the whole call when it runs on one thread or on our worker threads.

    The whole call, not only the worker threads' part: with two other busy processes on the
    2-core machine, the dozen whole-image operations around the workers (padding, the final
    division), run on torch's two intra-op threads, took the 1 mm block from 100 to 330 ms
    (each one waits at its barrier for a descheduled thread).
    """
    workers = u.device.type == "cpu" and tile_voxels is not None and threads > 1
    return single_threaded_torch() if small or workers else contextlib.nullcontext()


def nlm(
    u: torch.Tensor,
    sigma: float,
    h: float,
    patch_radius: Sequence[int],
    search_radius: Sequence[int],
    *,
    patchwise: bool = True,
    rician: bool = False,
    tile_voxels: int | None | str = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """Fast non-local means on a 2D/3D tensor (float32, any device).

    Weights ``exp(-max(‖P(x) - P(y)‖² / n - 2σ², 0) / h²)`` with ``P`` the box patch of
    ``n`` voxels: the noise-corrected distance of Buades et al. (2011), as in scikit-image
    when ``sigma`` is given. ``patchwise`` aggregates over every patch containing a voxel.
    ``rician``: average ``u²`` and return ``sqrt(max(mean - 2σ², 0))`` (Manjón et al. 2008).
    ``threads``: CPU worker threads over tiles (default: torch's thread count; 1: a single
    thread calling torch, which then uses its own intra-op threads).
    """
    _check_spatial(u)
    patch, search = tuple(patch_radius), tuple(search_radius)
    if patchwise:  # padding: search + 2 x patch (patch distance, then aggregation)
        search, patch, _ = fit_radii(u.shape, search, patch, patch)
        aggregate = patch
    else:
        search, patch = fit_radii(u.shape, search, patch)
        aggregate = (0,) * u.ndim
    plan = _Plan(tuple(-r for r in patch), tuple(patch), tuple(search), tuple(aggregate))
    count = math.prod(2 * r + 1 for r in patch)
    small = _one_thread(u, plan, tile_voxels, threads)
    tile = None if small else default_tile(u.device) if tile_voxels == "auto" else tile_voxels
    threads = 1 if small else configured_threads() if threads is None else threads
    with _threads_for(u, small, tile, threads):
        values = u * u if rician else None
        out = shift_filter(
            u,
            plan=plan,
            scale=1.0 / (h * math.sqrt(count)),
            bias=2.0 * sigma**2 / (h**2 * count),
            clamp_positive=True,
            center_weight=1.0,
            values=values,
            tile_voxels=tile,
            threads=threads,
        )
        if rician:
            out = out.sub_(2.0 * sigma**2).clamp_(min=0).sqrt_()
    return out


def nlm_skimage_reference(u: torch.Tensor, patch_size: int, patch_distance: int, h: float, sigma: float) -> torch.Tensor:
    """scikit-image's ``denoise_nl_means(fast_mode=True)`` reproduced by the engine (tests only).

    Same offsets, reflect padding, the box of ``2*(patch_size//2)`` voxels scikit-image's
    integral image sums over (normalised by ``patch_size**ndim``), the cut-off at distance 5,
    centre weight ``fast_exp(0)`` and its approximate exp. Agreement with scikit-image checks the engine's
    shifts, ranges and symmetric accumulation.
    """
    _check_spatial(u)
    off = patch_size // 2
    nd = u.ndim
    plan = _Plan((-off + 1,) * nd, (off,) * nd, (patch_distance,) * nd, (0,) * nd)
    return shift_filter(
        u,
        plan=plan,
        scale=1.0 / h,
        bias=2.0 * sigma**2 / h**2,
        clamp_positive=True,
        center_weight=float(_fast_exp_skimage(torch.zeros(1))[0]),
        tile_voxels=None,
        norm_count=float((2 * off + 1) ** nd),
        reference=True,
    )


def bilateral(
    u: torch.Tensor,
    sigma_color: float,
    sigma_spatial: Sequence[float],
    radius: Sequence[int],
    *,
    tile_voxels: int | None | str = "auto",
    threads: int | None = None,
) -> torch.Tensor:
    """Bilateral filter: Gaussian in space (``sigma_spatial`` voxels per axis) × Gaussian in intensity.

    ``radius`` bounds the window per axis (voxels). The spatial weight enters the engine as
    a per-offset bias ``-Σ (d_a / σ_a)² / 2`` (its log), the range weight through ``scale``.
    """
    _check_spatial(u)
    (radius,) = fit_radii(u.shape, radius)
    plan = _Plan((0,) * u.ndim, (0,) * u.ndim, tuple(radius), (0,) * u.ndim)
    small = _one_thread(u, plan, tile_voxels, threads)
    tile = None if small else default_tile(u.device) if tile_voxels == "auto" else tile_voxels
    threads = 1 if small else configured_threads() if threads is None else threads
    with _threads_for(u, small, tile, threads):
        return shift_filter(
            u,
            plan=plan,
            scale=1.0 / (math.sqrt(2.0) * sigma_color),
            bias=0.0,
            spatial_sigma=tuple(sigma_spatial),
            clamp_positive=False,
            center_weight=1.0,
            tile_voxels=tile,
            threads=threads,
        )


def tv_chambolle(
    u: torch.Tensor,
    weight: float,
    *,
    eps: float = 2.0e-4,
    max_num_iter: int = 200,
    axis_scale: Sequence[float] | None = None,
) -> tuple[torch.Tensor, int]:
    """Total-variation (ROF) denoising by Chambolle's projection algorithm.

    The same iteration and stopping rule as ``skimage.restoration.denoise_tv_chambolle``
    (energy change below ``eps`` × initial energy), in torch. ``axis_scale`` multiplies
    the finite difference along each axis (``min_spacing / spacing``: anisotropic voxels
    are smoothed less across the coarse axis); ones reproduce scikit-image. Returns the
    result and the number of iterations run. Images up to :data:`TV_ONE_THREAD_VOXELS` run
    on one thread.
    """
    _check_spatial(u)
    small = u.device.type == "cpu" and u.numel() <= TV_ONE_THREAD_VOXELS
    with single_threaded_torch() if small else contextlib.nullcontext():
        return _tv_chambolle(u, weight, eps, max_num_iter, axis_scale)


def _tv_chambolle(
    u: torch.Tensor, weight: float, eps: float, max_num_iter: int, axis_scale: Sequence[float] | None
) -> tuple[torch.Tensor, int]:
    nd = u.ndim
    scale = [1.0] * nd if axis_scale is None else [float(s) for s in axis_scale]
    image = u.to(torch.float32).contiguous()
    shape = image.shape
    p = torch.zeros((nd, *shape), dtype=image.dtype, device=image.device)
    g = torch.zeros_like(p)
    d = torch.zeros_like(image)
    out = torch.empty_like(image)
    tau = 1.0 / (2.0 * sum(s * s for s in scale))
    e_init = e_prev = 0.0
    iterations = 0
    for i in range(max_num_iter):
        iterations = i + 1
        if i > 0:
            # d = -div(p): the adjoint of the (scaled) forward difference, as scikit-image
            torch.mul(p[0], -scale[0], out=d)
            for ax in range(nd):
                if ax:
                    d.sub_(p[ax], alpha=scale[ax])
                n = shape[ax]
                if n > 1:
                    d.narrow(ax, 1, n - 1).add_(p[ax].narrow(ax, 0, n - 1), alpha=scale[ax])
            torch.add(image, d, out=out)
            flat = d.reshape(-1)
            energy = float(torch.dot(flat, flat))
            current = out
        else:
            energy, current = 0.0, image
        for ax in range(nd):
            n = shape[ax]
            if n > 1:
                target = g[ax].narrow(ax, 0, n - 1)
                torch.sub(current.narrow(ax, 1, n - 1), current.narrow(ax, 0, n - 1), out=target)
                if scale[ax] != 1.0:
                    target.mul_(scale[ax])
        norm = g[0] * g[0]
        for ax in range(1, nd):
            norm.addcmul_(g[ax], g[ax])
        norm.sqrt_()
        energy += weight * float(norm.sum(dtype=torch.float64))
        norm.mul_(tau / weight).add_(1.0)
        p.sub_(g, alpha=tau).div_(norm)
        energy /= image.numel()
        if i == 0:
            e_init = e_prev = energy
        elif abs(e_prev - energy) < eps * e_init:
            break
        else:
            e_prev = energy
    return (out if iterations > 1 else image.clone()), iterations
