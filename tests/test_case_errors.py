"""Case errors are one line and quote no header value: redacted where every executor makes them (worker.process_case).

The family: malformed PN, DA, TM, DT and LO values carrying markers, as real pydicom, highdicom,
MONAI and Python errors quote them, plus multi-line texts with tracebacks from several libraries.
Each case goes through the real worker path, and the manifest, case texts and stderr are searched.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from voxpipe.errors import MAX_LINE, one_line
from voxpipe.redaction import VALUE_WITHHELD, CaseRedactor, redact_quoted
from voxpipe_plugins.io_dicom.synthetic import SeriesSpec, ct_like_volume, write_series

warnings.simplefilter("ignore")
MARK = "PHIMKERR"
MALFORMED = {  # keyword: a value that fails its VR, with a marker in it
    "PatientName": f"{MARK}01^Doe^Jane",  # PN
    "PatientBirthDate": f"{MARK}02",  # DA
    "StudyTime": f"{MARK}03x",  # TM
    "AcquisitionDateTime": f"{MARK}04",  # DT
    "InstitutionName": f"{MARK}05 General",  # LO
    "SliceThickness": f"{MARK}06",  # DS
    "PatientSex": f"{MARK}07",  # CS (not M / F / O)
}


def _set_raw(ds, keyword: str, text: str) -> None:
    """Store ``text`` as the element's raw bytes: pydicom refuses to set a value that fails its VR."""
    tag = Tag(tag_for_keyword(keyword))
    data = text.encode() + (b" " if len(text) % 2 else b"")
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(keyword), len(data), data, 0, False, True)


def write_malformed_series(folder: Path, shape: tuple[int, int, int], seed: int) -> list[Path]:
    """A synthetic series whose headers carry every MALFORMED value, stored raw (as a broken scanner would)."""
    paths = write_series(folder, ct_like_volume(shape, seed=seed), SeriesSpec())
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, text in MALFORMED.items():
            _set_raw(ds, keyword, text)
        ds.save_as(path)
    return paths


@pytest.fixture
def malformed_series(tmp_path) -> list[Path]:
    return write_malformed_series(tmp_path / "in", (3, 12, 12), seed=2)


def _library_errors(paths: list[Path]) -> dict[str, BaseException]:
    """Real exceptions, raised by the libraries on the malformed headers."""
    import highdicom as hd
    import numpy as np
    from pydicom.valuerep import DA, DT, TM

    found: dict[str, BaseException] = {}
    raw = pydicom.dcmread(paths[0], stop_before_pixels=True)

    def catch(name, call):
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the point is the exception
            found[name] = exc
        else:
            raise AssertionError(f"{name} did not fail")

    catch("pydicom DA", lambda: DA(MALFORMED["PatientBirthDate"]))
    catch("pydicom TM", lambda: TM(MALFORMED["StudyTime"]))
    catch("pydicom DT", lambda: DT(MALFORMED["AcquisitionDateTime"]))
    catch("pydicom DS", lambda: pydicom.valuerep.DSfloat(str(raw["SliceThickness"].value).strip()))
    catch("python float", lambda: float(MALFORMED["SliceThickness"]))
    catch("highdicom sex", lambda: hd.PatientSexValues(MALFORMED["PatientSex"]))
    catch(
        "highdicom SEG",
        lambda: hd.seg.Segmentation(
            source_images=[pydicom.dcmread(p, stop_before_pixels=True) for p in paths],
            pixel_array=np.ones((3, 12, 12), np.uint8),
            segmentation_type="BINARY",
            segment_descriptions=[],
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="x",
            manufacturer_model_name="x",
            software_versions="1",
            device_serial_number="1",
        ),
    )
    catch("monai", lambda: _monai_fails_on(paths[0]))
    return found


def _monai_fails_on(path: Path) -> None:
    """MONAI's LoadImage trying every reader on a file a stage derived from the header (named after the patient):
    its message holds one traceback per reader, each quoting the file."""
    from monai.transforms import LoadImage

    derived = path.parent.parent / "derived" / (MALFORMED["PatientName"].split("^")[0] + ".png")
    derived.parent.mkdir(exist_ok=True)
    derived.write_bytes(b"not a picture")
    loader = LoadImage(image_only=True)
    loader.auto_select = False
    loader(str(derived))


def _pipeline_raising(exc: BaseException):
    """A real :class:`voxpipe.pipeline.Pipeline` whose one stage raises ``exc``."""
    from voxpipe.pipeline import BuiltStage, Pipeline

    def stage(case):
        raise exc

    pipeline = Pipeline.__new__(Pipeline)
    pipeline.stages = [BuiltStage(SimpleNamespace(index=2, label="lib.stage"), stage)]
    return pipeline


def _run_failing_case(tmp_path: Path, paths: list[Path], exc: BaseException, warning: str | None = None):
    from voxpipe.cases import CaseSource
    from voxpipe.worker import RunRecipe, process_case

    out = tmp_path / "out"
    (out / ".voxpipe").mkdir(parents=True, exist_ok=True)
    pipeline = _pipeline_raising(exc)
    if warning:
        inner = pipeline.stages[0].call

        def warn_then_raise(case):
            case.setdefault("warnings", []).append(warning)
            return inner(case)

        pipeline.stages[0].call = warn_then_raise
    recipe = RunRecipe(config={}, source="x.yaml", config_dir=str(tmp_path), config_hash="h", device="cpu", output_dir=str(out), retries=0)
    source = CaseSource(identity="id", paths=tuple(paths), kind="dicom")
    return process_case(pipeline, source, "case-000000000000", recipe)


def test_library_errors_on_malformed_values_are_redacted_in_the_worker(tmp_path, malformed_series):
    errors = _library_errors(malformed_series)
    assert len(errors) == 8
    quoted = [name for name, exc in errors.items() if MARK in str(exc)]
    assert len(quoted) >= 6, f"the libraries must quote the values for the test to mean anything: {quoted}"
    for name, exc in errors.items():
        outcome = _run_failing_case(tmp_path, malformed_series, exc, warning=f"lib warning: {exc}")
        assert outcome.status == "failed" and outcome.error.startswith("stage 2 (lib.stage): ")
        texts = [outcome.error, *outcome.warnings]
        assert not any(MARK in t or MARK.lower() in t.lower() for t in texts), (name, texts)
        assert all("\n" not in t and len(t) <= MAX_LINE + 40 for t in texts), (name, texts)
        if MARK in str(exc):
            assert VALUE_WITHHELD in outcome.error, name


def test_every_malformed_value_is_withheld_even_unquoted(tmp_path, malformed_series):
    """A message that quotes nothing but holds the value (a library's own wording) loses it too:
    the case's header values are searched, including the name's parts and raw values that fail their VR."""
    redact = CaseRedactor(malformed_series)
    for keyword, value in MALFORMED.items():
        for shown in (value, value.upper(), value.lower(), *[p for p in value.split("^") if len(p) >= 3]):
            text = redact(f"{keyword} holds {shown} which is not valid")
            assert MARK.lower() not in text.lower() and "Jane" not in text, text
    assert redact("stage 3 (segment.otsu): label map is empty") == "stage 3 (segment.otsu): label map is empty"


@pytest.mark.parametrize(
    "text",
    [
        "Unable to convert 'Doe^Jane' to 'DA' object",
        "Unable to convert non-conformant value '1970-13-45' to 'TM' object",
        "Invalid value for VR DA: 'Doe^Jane'",
        "could not convert string to float: 'Doe Jane'",
        "invalid literal for int() with base 10: b'Doe'",
        "time data '19700102' does not match format '%Y%m%d'",
        "'Doe Jane' is not a valid PatientSexValues",
        'Value "Doe^Jane" for PN exceeds the maximum length',
    ],
)
def test_quoted_values_in_library_message_shapes_are_withheld(text):
    redacted = redact_quoted(text)
    assert "Doe" not in redacted and "Jane" not in redacted and "19700102" not in redacted and "1970-13-45" not in redacted
    assert VALUE_WITHHELD in redacted


@pytest.mark.parametrize(
    "text",
    [
        "'FileDataset' object has no attribute 'SliceThickness'",
        "expected 'label' of shape '(1, 64, 64, 32)' and dtype 'float32', got 'uint8'",
        "unknown transfer syntax '1.2.840.10008.1.2.4.50'",
        "the case's label doesn't fit",
        "value for VR 'DS' in <input file 3>",
    ],
)
def test_quoted_names_that_are_not_values_are_kept(text):
    assert redact_quoted(text) == text


def _traceback_of(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("did not raise")


def test_multi_line_library_texts_become_one_line(tmp_path):
    """MONAI's LoadImage (a traceback per reader), torch's DataLoader (the worker's traceback), pydicom, highdicom and
    plain multi-line messages: one line, the traceback replaced by the error it ended in, cut to MAX_LINE."""
    import torch
    from torch.utils.data import DataLoader

    bad = tmp_path / "scan.png"
    bad.write_bytes(b"not a picture at all")

    def monai_all_readers():
        from monai.transforms import LoadImage

        loader = LoadImage(image_only=True)
        loader.auto_select = False  # try every reader, as MONAI does for unknown suffixes
        loader(str(bad))

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise ValueError("bad item\nsecond line")

    inner = _raised(lambda: pydicom.valuerep.DA("bad date"))
    texts = {
        "monai": _raised(monai_all_readers),
        "torch": _raised(lambda: next(iter(DataLoader(Broken(), num_workers=0)))),
        "wrapped traceback": RuntimeError("applying transform failed\n" + _traceback_of(inner)),
        "chained": RuntimeError("outer\n" + _traceback_of(_raised(lambda: _chain()))),
        "multi-line": ValueError("first\n\n  second\tthird\r\nfourth"),
        "huge": RuntimeError("x" * 5000 + "\nTraceback (most recent call last):\n  File 'a.py', line 1\nKeyError: 'image'"),
    }
    for name, exc in texts.items():
        line = one_line(exc)
        assert "\n" not in line and "\r" not in line and "Traceback" not in line and len(line) <= MAX_LINE, (name, line)
        assert line.startswith(type(exc).__name__), (name, line)
    assert "could not" in one_line(texts["monai"]) or "cannot" in one_line(texts["monai"])
    assert (
        one_line(texts["wrapped traceback"])
        == "RuntimeError: applying transform failed [ValueError: invalid literal for int() with base 10: 'bad ']"
    )
    assert one_line(texts["chained"]) == "RuntimeError: outer [ValueError: outer cause; KeyError: 'inner']"
    assert one_line(texts["torch"]).endswith("[ValueError: bad item second line]") or "bad item" in one_line(texts["torch"])
    assert one_line(texts["huge"]).endswith("[KeyError: 'image']")
    assert one_line(texts["multi-line"]) == "ValueError: first second third fourth"


def _chain():
    try:
        raise ValueError("outer cause")
    except ValueError as exc:
        raise KeyError("inner") from exc


PLUGIN = '''
"""quotetest: a third-party stage that lets library errors on the source headers escape, as many would."""
import pydicom
from pydantic import BaseModel, ConfigDict

from voxpipe.hookspecs import hookimpl
from voxpipe.stage import StageKind, StageSpec


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = "DA"


class Quote:
    def __init__(self, mode="DA"):
        self.mode = mode

    def __call__(self, case):
        ds = pydicom.dcmread(case["dicom"]["files"][0], stop_before_pixels=True)
        raw = {k: str(ds[k].value).strip() for k in ("PatientBirthDate", "StudyTime", "AcquisitionDateTime", "PatientSex", "SliceThickness")}
        if self.mode == "DA":
            pydicom.valuerep.DA(raw["PatientBirthDate"], validation_mode=2)
        if self.mode == "TM":
            pydicom.valuerep.TM(raw["StudyTime"])
        if self.mode == "DT":
            pydicom.valuerep.DT(raw["AcquisitionDateTime"])
        if self.mode == "CS":
            import highdicom
            highdicom.PatientSexValues(raw["PatientSex"])
        if self.mode == "DS":
            float(raw["SliceThickness"])
        if self.mode == "PN":
            import traceback
            try:
                raise ValueError(f"name {ds.PatientName} has too many parts")
            except ValueError:
                raise RuntimeError("applying transform <Quote>\\n" + traceback.format_exc()) from None
        if self.mode == "LO":
            raise KeyError(f"no protocol for {ds.InstitutionName}")
        return case


@hookimpl
def voxpipe_register_stages(register):
    register(StageSpec(id="quotetest.library", kind=StageKind.TRANSFORM, summary="Test only: a library error quoting a header value.",
                       params=Params, factory=Quote, reads=("image",), writes=("image",)))
'''


@pytest.fixture
def quotetest(tmp_path, monkeypatch):
    import os

    site = tmp_path / "site"
    (site / "voxpipe_quotetest").mkdir(parents=True)
    (site / "voxpipe_quotetest" / "__init__.py").write_text("")
    (site / "voxpipe_quotetest" / "plugin.py").write_text(PLUGIN)
    info = site / "voxpipe_quotetest-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: voxpipe-quotetest\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voxpipe]\nquotetest = voxpipe_quotetest.plugin\n")
    (info / "RECORD").write_text("")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))


@pytest.mark.parametrize("mode", ["PN", "DA", "TM", "DT", "LO", "CS", "DS"])
def test_run_outputs_carry_no_value_a_library_error_quoted(cli, tmp_path, malformed_series, write_config, quotetest, mode):
    """End to end, through the worker processes: stderr, manifest.json, report.html carry no marker, and the
    case error is one line that says which stage failed and that a value was withheld."""
    config = write_config(f"version: 1\nname: e\nstages:\n  - use: load.dicom\n  - use: quotetest.library\n    with: {{mode: {mode}}}\n")
    result = cli("run", config, "-i", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 1, result.stderr
    assert "stage 2 (quotetest.library)" in result.stderr
    blobs = {"stdout": result.stdout, "stderr": result.stderr}
    blobs.update({p.name: p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()})
    assert {"manifest.json", "report.html"} <= set(blobs)
    leaks = [name for name, text in blobs.items() if MARK.lower() in text.lower() or "Jane" in text]
    assert not leaks, {name: blobs[name][:2000] for name in leaks}
    [case] = json.loads(blobs["manifest.json"])["cases"]
    assert case["status"] == "failed" and "\n" not in case["error"] and VALUE_WITHHELD in case["error"]
    assert "Traceback" not in case["error"]
