"""A tf.data input pipeline and a custom tf.distribute training loop for image classifiers."""

from data_prep import logs

logs.hide_library_noise()
logs.import_tensorflow()
