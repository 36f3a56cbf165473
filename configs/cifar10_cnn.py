"""CIFAR-10 with three VGG-style conv+BatchNorm+pool blocks, dropout and Dense(128).

Literature for simple CNNs of this size: ~80-85% test accuracy. The classic Keras example
cifar10_cnn.py (4 convs, no BatchNorm) "gets to 75% validation accuracy in 25 epochs, and
79% after 50 epochs"; adding BatchNorm, growing dropout and flip/shift augmentation (as
here) is the usual route past 85% with longer training.

  python -m data_prep.build --dataset=cifar10 --output_dir=DATA
  python -m trainer.main --config=configs/cifar10_cnn.py --data_dir=DATA --model_dir=RUN

Training evaluates on the validation split each epoch; `--mode=eval` on the same command
reports the best model on the test split (model_dir/eval/).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "cifar_cnn"
    config.image_size = (32, 32)
    config.normalization = "dataset"
    config.global_batch_size = 64
    config.epochs = 100
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    return config
