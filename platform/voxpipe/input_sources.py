"""Inputs named by a URL (``-i 'dicomweb+http://...'``): the core side of plugin input sources.

A plugin registers an :class:`InputSourceSpec` per URL scheme through the
``voxpipe_register_input_sources`` hook. ``-i`` text with a ``scheme://`` is resolved here;
the spec's opener (a ``"module:function"`` string, imported only when such an input is used)
copies the data into a PRIVATE temporary folder as ordinary files, and from then on discovery
and loading run exactly as on a local folder. So grouping, values, affines, case ids (a DICOM
case id hashes the SeriesInstanceUID, not a path) and error lines are those of local files, and
no loader needs to know about networks. The folder is 0700 and is removed when the command
ends, on error, Ctrl-C or SIGTERM alike.

What is recorded (manifest, logs, errors) is :func:`redacted_source`: the scheme, host, port
and path, and the NAMES of the query keys, never their values (PatientID, AccessionNumber and
dates identify people; UIDs are remapped by de-identification, so VoxPipe treats them as
identifying too) and never a user name or password.

The registry does not (yet) collect this hook with the others, so sources are loaded here from
the same entry points, under the same allow/block rule; loading imports no opener.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from voxpipe.errors import UsageError

SCHEME_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]*$")
_URL_START = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")  # what pathlib leaves of ``scheme://`` (it collapses ``//``)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
TEMP_PREFIX = "voxpipe-source-"

Opener = Callable[[str, Path, Mapping[str, Any]], None]


class InputSourceError(UsageError):
    """A URL input that cannot be read: one line, exit 2, nothing kept. Openers raise it for anything a user can fix."""


@dataclass(frozen=True)
class InputSourceSpec:
    """A URL scheme a plugin can read inputs from.

    Attributes:
        scheme: lower-case URL scheme, e.g. ``dicomweb+https``.
        summary: one line for ``voxpipe plugins`` and error messages.
        opener: ``"module:function"`` (imported only when an input of this scheme is used) or a
            callable ``opener(url, folder, options)``: it writes the input's files into ``folder``
            (private, empty, removed afterwards) and raises :class:`InputSourceError` with one
            PHI-free line for what a user can fix. ``options`` holds command options such as
            ``ae_title`` or ``ca_bundle`` (absent when not given).
    """

    scheme: str
    summary: str
    opener: Any
    plugin: str = ""
    distribution: str = ""
    version: str = ""


def checked_input_source(spec: object) -> InputSourceSpec:
    """Reject a malformed registration with a reason the plugin author can act on."""
    if not isinstance(spec, InputSourceSpec):
        raise TypeError(f"registered {type(spec).__name__} as an input source, expected voxpipe.plugin.InputSourceSpec")
    if not (isinstance(spec.scheme, str) and SCHEME_PATTERN.match(spec.scheme)) or spec.scheme in {"file", ""}:
        raise ValueError(f"input source scheme {spec.scheme!r} must be a lower-case URL scheme like 'dicomweb+https' (not 'file')")
    if not (isinstance(spec.summary, str) and spec.summary.strip() and "\n" not in spec.summary.strip()):
        raise ValueError(f"input source {spec.scheme}: summary must be one non-empty line")
    if not (callable(spec.opener) or (isinstance(spec.opener, str) and ":" in spec.opener)):
        raise TypeError(f"input source {spec.scheme}: opener must be a callable or a 'module:function' string")
    return spec


@dataclass
class InputSources:
    """The URL schemes known to this process; ``conflicts`` are schemes two plugins claim (left out)."""

    specs: dict[str, InputSourceSpec] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


_loaded: InputSources | None = None
_loaded_for: tuple | None = None  # the allow/block selection _loaded was made under (None: set by hand, as tests and the CLI do)


def from_registry(registry) -> InputSources:
    """The input sources of a loaded :class:`~voxpipe.registry.Registry` (conflicts as the registry reports them)."""
    conflicts = {key: message for (noun, key), message in registry.contested.items() if noun == "input scheme"}
    return InputSources(specs=dict(registry.input_sources), conflicts=conflicts)


def use_registry(registry) -> None:
    """Make ``registry`` (the command line's, with its --allow-plugin/--block-plugin) the one URL inputs are resolved by."""
    global _loaded, _loaded_for
    _loaded, _loaded_for = from_registry(registry), None


def load_input_sources(reload: bool = False) -> InputSources:
    """Every permitted plugin's input sources, from the registry (allow/block as for stages); cached per process.

    The command line hands its own registry over (:func:`use_registry`); elsewhere (the Python
    API, workers) the registry is loaded under the environment's allow/block lists.
    """
    global _loaded, _loaded_for
    from voxpipe.registry import PluginSelection, Registry

    selection = PluginSelection.from_env()
    if _loaded is not None and not reload and _loaded_for in (None, (selection.allow, selection.block)):
        return _loaded
    _loaded, _loaded_for = from_registry(Registry.load(selection)), (selection.allow, selection.block)
    return _loaded


def opener_options(ae_title: str | None = None, ca_bundle: str | Path | None = None) -> dict[str, Any]:
    """The options a URL input's opener takes (``--ae-title``, ``--ca-bundle``), only those given."""
    return {key: value for key, value in (("ae_title", ae_title), ("ca_bundle", ca_bundle)) if value}


def source_text(value: str | Path | None) -> str | None:
    """The URL in ``value``, or None when it is a local path.

    click's ``Path`` type (and pathlib) turn ``scheme://host`` into ``scheme:/host``; that form is
    put back, unless a local file or folder of that name really exists.
    """
    if value is None:
        return None
    text = str(value)
    if _URL.match(text):
        return text
    match = _URL_START.match(text)
    if match and not Path(text).exists():
        return f"{match.group(1)}://{text[match.end() :]}"
    return None


def is_url(value: str | Path | None) -> bool:
    return source_text(value) is not None


def redacted_source(url: str) -> str:
    """``scheme://host:port/path?Key1=…&Key2=…``: no credentials, no query values, no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{url.split(':', 1)[0].lower()}://<unparsable address>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    if parts.username is not None and parts.scheme.lower() == "dimse":
        netloc = "<AE>@" + netloc  # the called AE title is a device name, but it is user text: not shown
    path = re.sub(r"[^A-Za-z0-9._~/-]", "_", parts.path)
    keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{re.sub(r'[^A-Za-z0-9_]', '_', key)}=…" for key in keys)
    return f"{parts.scheme.lower()}://{netloc}{path}" + (f"?{query}" if query else "")


def spec_for(url: str, registry=None) -> InputSourceSpec:
    """The registered source for ``url``'s scheme (from ``registry`` when the caller holds one); an unknown scheme is one line listing the known ones."""
    scheme = url.split("://", 1)[0].lower()
    sources = from_registry(registry) if registry is not None else load_input_sources()
    if scheme in sources.conflicts:
        raise UsageError(sources.conflicts[scheme])
    spec = sources.specs.get(scheme)
    if spec is None:
        known = ", ".join(f"{s}://" for s in sorted(sources.specs)) or "none (no plugin registers input sources)"
        raise UsageError(f"-i/--input: no plugin reads `{scheme}://` inputs; known URL schemes: {known}; or give a local file or folder")
    return spec


@contextlib.contextmanager
def open_input(value: str | Path, options: Mapping[str, Any] | None = None, registry=None) -> Iterator[Path]:
    """Yield a private folder holding the input ``value`` names (a URL), removed afterwards whatever happens.

    A local path is yielded unchanged, so callers can use this for every ``-i``. A caller that
    already loaded the registry passes it, so the plugins are not loaded a second time.
    """
    url = source_text(value)
    if url is None:
        yield Path(value)
        return
    spec = spec_for(url, registry)
    opener = spec.opener
    if isinstance(opener, str):
        from voxpipe.stage import import_object

        opener = import_object(opener)
    from voxpipe.input_redaction import register_input, register_secret

    parts = urlsplit(url)
    for _key, value in parse_qsl(parts.query, keep_blank_values=False):
        register_secret(value)  # library errors quote request URLs: --debug tracebacks must not show these
    userinfo = parts.netloc.rpartition("@")[0]
    for secret in (userinfo, *userinfo.split(":")) if userinfo else ():
        register_secret(secret)  # refused by the pacs sources, but a traceback must not show it either
    folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))  # mode 0700, owned by us
    register_input(folder)
    try:
        with _terminate_as_exit():
            opener(url, folder, dict(options or {}))
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C while a URL input's folder exists, so ``finally`` removes it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
