"""MNIST with LeNet-5 (ReLU, average pooling, 'same' padding on the 28x28 input).

LeCun et al. 1998, "Gradient-based learning applied to document recognition": LeNet-5 reaches
0.95% test error (about 99.0% accuracy) on MNIST; modern ReLU/Adam variants reach ~99%.

  python -m data_prep.build --dataset=mnist --output_dir=DATA
  python -m trainer.main --config=configs/mnist_lenet5.py --data_dir=DATA --model_dir=RUN

Training evaluates on the validation split each epoch; `--mode=eval` on the same command
reports the best model on the test split (model_dir/eval/).
"""

from configs import mnist_cnn


def get_config():
    config = mnist_cnn.get_config()  # Same data, input and schedule; only the network differs.
    config.model.name = "lenet5"
    return config
