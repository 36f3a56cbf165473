"""Installs data_prep, trainer and configs; also Dataflow's `--setup_file`."""

import setuptools

setuptools.setup(
    name="imgcls-pipeline",
    version="0.1.0",
    description="TFRecord data preparation (Apache Beam) and a tf.distribute trainer for image classifiers.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=["data_prep", "data_prep.*", "trainer", "trainer.*", "configs", "configs.*"]
    ),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "apache-beam>=2.77,<2.78",
        "tensorflow-datasets>=4.9.10,<5",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "pillow>=11,<14",
        "fsspec>=2026.1",
        "gcsfs>=2026.1",
        "google-crc32c>=1.5,<2",
        "ml-collections>=1.0,<2",
        "tensorboard>=2.21,<2.22",  # tf.summary needs it (TF 2.21 no longer installs it).
        "matplotlib>=3.8,<4",  # Learning-curve PNG.
        "tensorflow-hub>=0.16,<0.17",  # Beam's TensorFlow model handler (feature extraction) imports it.
        # Beam imports its interactive runner's utilities, which need pandas, for any pipeline built under IPython
        # (a notebook), where it is an optional extra of Beam's.
        "pandas>=1.4.3,!=1.5.0,!=1.5.1,<2.4",
    ],
    # Each is `python -m <module>` under a shorter name (python -m keeps working).
    entry_points={
        "console_scripts": [
            "imgcls-build = data_prep.cli:build_command",
            "imgcls-extract-features = data_prep.cli:extract_features_command",
            "imgcls-show = data_prep.cli:show_command",
            "imgcls-train = trainer.commands:train_command",
            "imgcls-predict = trainer.commands:predict_command",
        ]
    },
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.5,<4",
            "psutil>=5.9",
            "scikit-image>=0.24,<1",
            "gcp-storage-emulator>=2024.1",  # tests/test_gcs.py: a local GCS server.
            "ruff>=0.17,<0.18",  # make lint: lint and format (pyproject.toml).
            "mypy>=2.4,<3",  # make lint: type check.
            "ipykernel>=6.29,<8",  # tests/test_notebook.py: the README's notebook example in a Jupyter kernel.
            "nbclient>=0.10,<1",
            "nbformat>=5.9,<6",
        ],
        "samples": ["scikit-image>=0.24,<1"],
    },
)
