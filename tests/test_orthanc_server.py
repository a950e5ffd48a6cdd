"""Smoke test of the Orthanc fixture: a DICOM file uploaded over REST is listed, and QIDO-RS needs the password."""

from __future__ import annotations

import urllib.error
import urllib.request

import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.orthanc_server import orthanc  # noqa: F401  (the session fixture)


def test_an_uploaded_instance_is_listed(orthanc):  # noqa: F811
    orthanc.delete_all()
    path = get_testdata_file("CT_small.dcm", download=False)
    answer = orthanc.upload([path])[0]
    assert answer["ID"] in orthanc.instances()
    tags = orthanc.get(f"/instances/{answer['ID']}/simplified-tags")
    assert tags["SOPInstanceUID"] == pydicom.dcmread(path).SOPInstanceUID
    studies = orthanc.get("/dicom-web/studies")  # the DICOMweb plugin is loaded and answers QIDO-RS
    assert [s["0020000D"]["Value"][0] for s in studies] == [pydicom.dcmread(path).StudyInstanceUID]
    orthanc.delete_all()
    assert orthanc.instances() == []


def test_the_server_refuses_requests_without_the_password(orthanc):  # noqa: F811
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{orthanc.dicomweb_url}/studies", timeout=10)
    assert caught.value.code == 401
