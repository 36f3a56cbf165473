"""Apache Beam jobs that build TFDS-compatible TFRecord datasets from image folders and the Keras datasets."""

from data_prep import logs

logs.hide_library_noise()
