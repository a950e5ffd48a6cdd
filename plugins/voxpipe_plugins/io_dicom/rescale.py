"""Stored values -> real-world values: RescaleSlope/Intercept per frame and MONOCHROME1.

The decision (output type, what is recorded) is made once from the headers, as a
:class:`Rescale`; applying it works on any run of consecutive frames. That split lets
the in-memory loader convert the whole stack in one go and ``voxpipe convert`` convert
one slice at a time on its way to the file, with the same rules and the same result.

``dtype="auto"`` keeps integers when the result is exactly integral (all slopes 1, whole
intercepts): int16 when every value fits, int32 otherwise; anything else is float32.
Whether int16 fits is known from BitsStored alone for most series; CT stored as full-range
int16 with intercept -1024 needs the data range, which :meth:`Rescale.fits` checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxpipe_plugins.io_dicom.frames import Frame
from voxpipe_plugins.io_dicom.headers import SliceHeader

INT16_LOW, INT16_HIGH = -32768, 32767


def stored_range(header: SliceHeader) -> tuple[int, int]:
    """The stored values BitsStored and PixelRepresentation allow."""
    allocated = int(header.get("BitsAllocated", 16))
    bits = int(header.get("BitsStored", allocated))
    if int(header.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


@dataclass(frozen=True)
class Rescale:
    """How frames' stored values become real-world values."""

    target: np.dtype
    slopes: np.ndarray
    intercepts: np.ndarray
    integral: bool
    monochrome1: bool
    low: int
    high: int
    record: dict

    @property
    def uniform(self) -> bool:
        return bool(np.all(self.slopes == self.slopes[0]) and np.all(self.intercepts == self.intercepts[0]))

    def fits(self, smin: int, smax: int, target=np.int16) -> bool:
        """Do stored values in ``[smin, smax]`` stay inside ``target`` once inverted and offset?"""
        if self.monochrome1:
            smin, smax = self.low + self.high - smax, self.low + self.high - smin
        info = np.iinfo(target)
        return info.min <= smin + int(self.intercepts.min()) and smax + int(self.intercepts.max()) <= info.max

    def settled(self) -> bool:
        """True when the output type needs no look at the data (the allowed stored range fits int16)."""
        return not self.integral or self.fits(self.low, self.high)

    def with_data_range(self, smin: int, smax: int) -> Rescale:
        """The plan once the stored data range is known: int16 if it fits, else int32."""
        if not self.integral:
            return self
        target = np.dtype(np.int16 if self.fits(smin, smax) else np.int32)
        return Rescale(target, self.slopes, self.intercepts, True, self.monochrome1, self.low, self.high, self.record)

    def apply(self, stored: np.ndarray, start: int = 0) -> np.ndarray:
        """Real-world values of frames ``start .. start + len(stored)``; may reuse ``stored``'s memory."""
        count = stored.shape[0]
        intercepts = self.intercepts[start : start + count]
        if self.integral:
            target = self.target.type
            if self.monochrome1:  # invert in a type that holds low + high (65535 for 16-bit unsigned), then narrow
                result = (np.int64(self.low + self.high) - stored.astype(np.int32)).astype(target)
            else:
                result = stored if stored.dtype == self.target else stored.astype(target)
            if self.uniform:
                if intercepts[0]:
                    result += target(intercepts[0])
            else:
                for k, value in enumerate(intercepts):
                    result[k] += target(value)
            return result
        slopes = self.slopes[start : start + count]
        result = np.empty(stored.shape, dtype=np.float32)
        for k in range(count):
            frame = stored[k]
            values = (self.low + self.high) - frame.astype(np.float32) if self.monochrome1 else frame
            np.multiply(values, np.float32(slopes[k]), out=result[k], casting="unsafe")
            result[k] += np.float32(intercepts[k])
        return result


def plan_rescale(frames: list[Frame], stored_dtype: np.dtype, dtype: str = "auto") -> Rescale:
    """The :class:`Rescale` for ``frames`` (in output order) from their headers.

    For integral series whose allowed stored range does not fit int16 the plan says int16
    provisionally; callers check the data with :meth:`Rescale.fits` (or call
    :meth:`Rescale.with_data_range`) before trusting it.
    """
    header = frames[0].header
    slopes = np.array([f.slope for f in frames], dtype=np.float64)
    intercepts = np.array([f.intercept for f in frames], dtype=np.float64)
    monochrome1 = header.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1"
    low, high = stored_range(header)
    record = {"rescale": "none", "photometric": header.get("PhotometricInterpretation", "")}
    integral = bool(
        dtype == "auto" and np.all(slopes == 1) and np.all(intercepts == np.round(intercepts)) and np.issubdtype(stored_dtype, np.integer)
    )
    uniform = np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0])
    if not (np.all(slopes == 1) and np.all(intercepts == 0)):
        record["rescale"] = f"slope {slopes[0]:g}, intercept {intercepts[0]:g}" if uniform else "per-slice slope/intercept"
    if monochrome1:
        record["photometric"] = "MONOCHROME1, inverted to the MONOCHROME2 convention"
    target = np.dtype(np.int16 if integral else np.float32)
    return Rescale(target, slopes, intercepts, integral, monochrome1, low, high, record)


def to_real_world(stored: np.ndarray, frames: list[Frame], dtype: str = "auto") -> tuple[np.ndarray, dict]:
    """Apply RescaleSlope/Intercept (per frame) and MONOCHROME1 inversion to a whole stack.

    Returns the array and a record of what was done.
    """
    plan = plan_rescale(frames, stored.dtype, dtype)
    if not plan.settled():
        plan = plan.with_data_range(int(stored.min()), int(stored.max()))
    return plan.apply(stored), plan.record
