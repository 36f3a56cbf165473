"""Cats vs dogs with a four-block CNN trained from scratch on 150x150 images.

Chollet, Deep Learning with Python (1st ed.), 5.2 (notebook 5.2-using-convnets-with-small-datasets):
on cats_and_dogs_small (2,000 training images) with data augmentation and dropout,
RMSprop 1e-4, batch 32, 100 epochs: "an accuracy of 82%" (2nd ed., 8.2: about 83% test).

  python -m data_prep.build --dataset=catsdogs --input_dir=kagglecatsanddogs --output_dir=DATA
  python -m trainer.main --config=configs/catsdogs_cnn.py --data_dir=DATA --model_dir=RUN

Training evaluates on the validation split each epoch; `--mode=eval` on the same command
reports the best model on the test split (model_dir/eval/).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "catsdogs_cnn"
    config.image_size = (150, 150)
    config.normalization = "unit"
    config.global_batch_size = 32
    config.epochs = 100
    config.optimizer = "rmsprop"
    config.learning_rate = 1e-4
    return config
