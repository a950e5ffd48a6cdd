"""The ``write.stow`` writer stage spec (STOW-RS to a DICOMweb server).

Pydantic and voxpipe only: this module is imported by ``voxpipe plugins`` and ``validate``.
Credentials never come from a config (a config is shared, versioned, printed in manifests):
the model refuses any field that looks like one, and a URL carrying ``user:password@``,
with one line that says where they go instead (the environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from voxpipe.params import StageParams
from voxpipe.stage import StageKind, StageSpec

CREDENTIAL_ENV = "VOXPIPE_DICOMWEB_USER/VOXPIPE_DICOMWEB_PASSWORD or VOXPIPE_DICOMWEB_TOKEN"
_CREDENTIAL_WORDS = ("user", "login", "pass", "pw", "token", "secret", "auth", "cred", "key", "bearer", "cookie", "jwt", "session")


def _looks_like_credential(name: str) -> bool:
    folded = "".join(ch for ch in str(name).lower() if ch.isalnum())
    return any(word in folded for word in _CREDENTIAL_WORDS)


class StowParams(StageParams):
    url: str = Field(
        description="DICOMweb root of the server the case's DICOM outputs are stored to, http:// or https:// "
        "(e.g. http://127.0.0.1:8042/dicom-web). No user, password or query in it: credentials come from "
        f"{CREDENTIAL_ENV} in the environment.",
    )
    ca_bundle: str | None = Field(
        None,
        max_length=4096,
        description="https: a PEM file of the certificate authorities to trust instead of the system's (relative to the config; "
        "unset: $VOXPIPE_DICOMWEB_CA_BUNDLE, else the system's). Certificates are always verified.",
    )
    identity: Literal["source", "any"] = Field(
        "source",
        description="`source` (default): every file sent must belong to the source series' study (a SEG written by "
        "write.dicom_seg with `identity: source`), so the PACS files it with its source; a file that does not (the "
        "pseudonymous default SEG, de-identified copies) fails the case before anything is sent. `any`: send whatever "
        "DICOM the case holds (e.g. a de-identified research archive).",
    )
    retries: int = Field(3, ge=0, le=10, description="Extra attempts after a transient error (connection reset, timeout, HTTP 5xx, 429).")
    backoff_s: float = Field(
        1.0, ge=0, le=60, description="Wait before the first retry, doubled after each one (a 429/503 Retry-After is honoured, up to 60 s)."
    )
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Seconds to wait for the server on each request.")
    batch_mib: int = Field(64, ge=1, le=4096, description="At most this much DICOM per STOW-RS request; more files go in further requests.")

    @model_validator(mode="before")
    @classmethod
    def _no_credentials(cls, data: Any) -> Any:
        """Refuse credentials in any form a config could carry them, without echoing their values."""
        if not isinstance(data, dict):
            return data
        for name in data:
            if name not in cls.model_fields and _looks_like_credential(name):
                raise ValueError(f"`{name}`: credentials are never read from a config; set {CREDENTIAL_ENV} in the environment")
        url = data.get("url")
        if isinstance(url, str):
            problem = _url_problem(url)
            if problem:
                raise ValueError(f"`url`: {problem}")
        return data


def _url_problem(url: str) -> str | None:
    """What is wrong with a DICOMweb root, in words that never repeat the URL (it may hold a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "not a valid URL; give http://HOST:PORT/PATH or https://..."
    del port
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https:// (the server's DICOMweb root)"
    if not parts.hostname:
        return "has no host; give http://HOST:PORT/PATH"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return f"holds credentials (user@ or user:password@); never put them in a config: set {CREDENTIAL_ENV} in the environment"
    if parts.query or parts.fragment:
        return "must be the DICOMweb root, without ?query or #fragment (credentials or tokens go in the environment)"
    return None


def check_stow(params: StowParams, config_dir: Path, earlier: list[tuple[str, Any]] = ()) -> list[str]:
    """What ``voxpipe validate`` can say without a network: the CA bundle exists, and (``identity: source``)
    no earlier stage makes the DICOM it would send pseudonymous, which every case would otherwise fail on."""
    problems = []
    if params.ca_bundle:
        bundle = Path(params.ca_bundle).expanduser()
        bundle = bundle if bundle.is_absolute() else Path(config_dir) / bundle
        if not bundle.is_file():
            problems.append(f"`ca_bundle`: {params.ca_bundle} is not a file; give a PEM file of certificate authorities")
    if params.identity == "source":
        for index, (stage_id, stage_params) in enumerate(earlier, start=1):
            if stage_id == "write.dicom_seg" and getattr(stage_params, "identity", "source") != "source":
                problems.append(
                    f"stage {index} (write.dicom_seg) writes a pseudonymous SEG (identity: {stage_params.identity}), which "
                    "write.stow would refuse to send into the source's study: set `identity: source` there, or "
                    "`identity: any` here for a de-identified research archive"
                )
            elif stage_id == "deid.dicom":
                problems.append(
                    f"stage {index} (deid.dicom) de-identifies the series, so nothing written from it belongs to the source's "
                    "study: drop it before write.stow, or set `identity: any` here for a de-identified research archive"
                )
    return problems


def register_stow_stage(register) -> None:
    """Register ``write.stow``."""
    register(
        StageSpec(
            id="write.stow",
            kind=StageKind.WRITER,
            summary="Store the case's DICOM outputs (the SEG, any DICOM a stage wrote) to a DICOMweb server with STOW-RS.",
            description=(
                "Sends every DICOM file in the case folder (written by earlier stages, such as write.dicom_seg) to `url` with "
                "STOW-RS (dicomweb-client), in requests of at most `batch_mib`. Credentials come only from the environment "
                f"({CREDENTIAL_ENV}); https certificates are verified (`ca_bundle` to name the authorities). Transient errors "
                "(connection reset, timeout, HTTP 5xx, 429) are retried `retries` times with doubling back-off; a refused "
                "login, a rejected instance or an exhausted retry fails the case with one line and the run goes on. With "
                "`identity: source` (default) a file that does not belong to the source's study (a pseudonymous SEG) is "
                "refused before anything is sent: set `identity: source` on write.dicom_seg for a SEG that goes back to its PACS. "
                "Place it after the writers whose files it sends."
            ),
            params=StowParams,
            factory="voxpipe_plugins.pacs.stow:StowWriter",
            check=check_stow,
        )
    )
