"""CITATION.cff is valid Citation File Format 1.2.0 (what GitHub and Zenodo read), checked
offline against the schema that the cffconvert wheel ships (`make` downloads the wheel into
the venv; cffconvert itself pins jsonschema<4, so only its schema is used here)."""
import datetime
import json
import sys
import tomllib
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from qnnpipeline.paths import root

CITATION = root() / "CITATION.cff"


@pytest.fixture(scope="module")
def validator():
    wheels = sorted((Path(sys.prefix) / "wheels").glob("cffconvert-*.whl"))
    if not wheels:
        pytest.skip(f"no cffconvert wheel in {Path(sys.prefix) / 'wheels'}: run `make venv`")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        schema = json.loads(wheel.read("cffconvert/schemas/1.2.0/schema.json"))
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def cff() -> dict:
    """CITATION.cff as the schema sees it: YAML, with dates kept as the text they are."""
    document = yaml.safe_load(CITATION.read_text())
    if isinstance(document.get("date-released"), datetime.date):
        document["date-released"] = document["date-released"].isoformat()
    return document


def test_citation_cff_is_valid(validator):
    errors = sorted(validator.iter_errors(cff()), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_an_invalid_citation_is_caught(validator):
    broken = cff()
    del broken["authors"]
    with pytest.raises(jsonschema.ValidationError, match="'authors' is a required property"):
        validator.validate(broken)
    broken = cff() | {"license": "not-a-licence"}
    with pytest.raises(jsonschema.ValidationError, match="'not-a-licence' is not valid"):
        validator.validate(broken)


def test_citation_version_is_the_package_version():
    project = tomllib.loads((root() / "pyproject.toml").read_text())["project"]
    assert cff()["version"] == project["version"]
    assert cff()["cff-version"] == "1.2.0"
