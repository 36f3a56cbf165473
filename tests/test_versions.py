"""metadata.json records the versions of the libraries its bytes depend on (Pillow's encoder above all)."""

import importlib.metadata
import json
import subprocess
import sys

import pytest
from conftest import dataset_metadata

from data_prep import schema


def test_a_build_records_pillow_tensorflow_and_beam(sample_dataset):
    out, _ = sample_dataset
    written = json.loads((out / schema.METADATA_FILE).read_text())["versions"]
    assert written == {name: importlib.metadata.version(name) for name in ("pillow", "tensorflow", "apache-beam")}
    assert schema.DatasetMetadata.read(str(out)).versions == written


def test_the_versions_are_read_without_importing_tensorflow_or_beam():
    code = (
        "import sys; from data_prep import schema; "
        "print(sorted(schema.library_versions()), 'tensorflow' in sys.modules, 'apache_beam' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['apache-beam', 'pillow', 'tensorflow'] False False"


def test_metadata_written_before_versions_were_recorded_still_reads(tmp_path):
    older = dataset_metadata(["cat", "dog"]).to_dict()
    del older["versions"]
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(older))
    assert schema.DatasetMetadata.read(str(tmp_path)).versions is None
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps({**older, "versions": ["pillow"]}))
    with pytest.raises(schema.MetadataError, match="versions: "):
        schema.DatasetMetadata.read(str(tmp_path))
