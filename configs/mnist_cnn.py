"""MNIST with the Keras "Simple MNIST convnet" (two conv/pool blocks, dropout).

keras.io/examples/vision/mnist_convnet (fchollet): "A simple convnet that achieves ~99% test
accuracy on MNIST" (Adam, batch 128, 15 epochs).

  python -m data_prep.build --dataset=mnist --output_dir=DATA
  python -m trainer.main --config=configs/mnist_cnn.py --data_dir=DATA --model_dir=RUN

Training evaluates on the validation split each epoch; `--mode=eval` on the same command
reports the best model on the test split (model_dir/eval/).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "mnist_cnn"
    config.image_size = (28, 28)
    config.normalization = "unit"
    config.global_batch_size = 128
    config.epochs = 15
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    return config
