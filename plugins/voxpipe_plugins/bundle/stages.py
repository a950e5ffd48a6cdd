"""`bundle.working_copy`: the image copied to a working key (the input grid stays under `image`)."""

from __future__ import annotations

from voxpipe.stage import record


class WorkingCopy:
    """Callable ``case -> case`` (a MONAI dictionary transform) adding a copy of ``key`` under ``output_key``."""

    def __init__(self, key: str = "image", output_key: str = "net_input") -> None:
        self.key, self.output_key = key, output_key

    def __call__(self, case: dict) -> dict:
        image = case[self.key]
        out = dict(case)
        out[self.output_key] = image.clone() if hasattr(image, "clone") else image.copy()
        record(out, "bundle.working_copy", key=self.key, output_key=self.output_key)
        return out
