"""Which input file names messages may show: only the kinds scanners and PACS generate."""

import pytest

from voxpipe.redaction import technical_name

SCANNER_NAMES = [
    "IM000123.dcm",
    "IM_0001",
    "im-0001-0001.dcm",
    "IMG0001.dcm",
    "image0001.dcm",
    "slice001.dcm",
    "CT000123.DCM",
    "MR.1.3.12.2.1107.5.2.32.35162",
    "1.2.840.113619.2.55.3.dcm",
    "0001.dcm",
    "00000001",
    "a3f9c2d1e4b5a6c7",
    "EE12345",
    "Z01",
    "I10.dcm",
]
PERSONAL_NAMES = [
    "SMITH01.dcm",
    "JANE1.dcm",
    "DOE-1.dcm",
    "Doe_Jane.dcm",
    "doe.jane.0001.dcm",
    "PHIMK0312345678.dcm",
    "Mueller_3.dcm",
    "KIM0001.dcm",
    "IMjones001.dcm",
    "jdoe_ct.dcm",
    "Jane Doe 01.dcm",
    "Zoë01.dcm",
    "CTSMITH0001.dcm",
]


@pytest.mark.parametrize("name", SCANNER_NAMES)
def test_scanner_names_are_shown(name):
    assert technical_name(name)


@pytest.mark.parametrize("name", PERSONAL_NAMES)
def test_names_that_may_name_a_person_are_not(name):
    assert not technical_name(name)
