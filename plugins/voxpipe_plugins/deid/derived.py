"""De-identified copies of source headers, for writers of derived objects (DICOM SEG).

A derived object copies the patient and study modules of its source and references the
source instances by UID. When the source was not de-identified earlier in the pipeline,
the writer de-identifies in-memory copies of the source headers here, with the same key and
options ``deid.dicom`` and ``voxpipe deid`` use: the derived object then carries the same
pseudonymous Patient ID, shifted dates and keyed UIDs as the source series de-identified
with that key would, so it lines up with it (references resolve), whatever the order.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pydicom.dataset import Dataset

from voxpipe_plugins.deid.engine import METHOD_MARK, Deidentifier, DeidOptions
from voxpipe_plugins.deid.keys import default_key_file, fingerprint, load_or_create


def deidentified_by_voxpipe(ds: Dataset) -> bool:
    """Whether VoxPipe already de-identified ``ds`` (``deid.dicom`` ran before): use it as it is."""
    return str(ds.get("PatientIdentityRemoved", "")).upper() == "YES" and METHOD_MARK in str(ds.get("DeidentificationMethod", ""))


class DerivedIdentity:
    """De-identifies header copies under the project's key; the key is read only when needed.

    Args:
        key_file: the key file (None: ``$VOXPIPE_DEID_KEY_FILE``, else ``~/.config/voxpipe/deid.key``).
        options: the profile options; give the ones the source series is (or will be) de-identified with.
    """

    def __init__(self, key_file: Path | None = None, options: DeidOptions | None = None) -> None:
        self.key_path = Path(key_file) if key_file else default_key_file()
        self.options = options or DeidOptions()
        self._engine: Deidentifier | None = None

    def engine(self, output_root: Path) -> Deidentifier:
        """The engine under the key; a key inside ``output_root`` is refused (it would travel with the data)."""
        if self._engine is None:
            key, _ = load_or_create(self.key_path, output_root)
            self._engine = Deidentifier(key, self.options)
        return self._engine

    def key_fingerprint(self) -> str | None:
        return fingerprint(self._engine.pseudonyms._key) if self._engine is not None else None

    def apply(self, datasets: list[Dataset], output_root: Path) -> tuple[list[Dataset], int]:
        """De-identified copies of ``datasets`` (already de-identified ones as they are) and how many were done here.

        Raises:
            DeidError: a data set that cannot be de-identified; the message quotes no value.
        """
        done = 0
        result = []
        for ds in datasets:
            if not deidentified_by_voxpipe(ds):
                ds = copy.deepcopy(ds)
                self.engine(output_root).apply(ds)
                done += 1
            result.append(ds)
        return result, done
