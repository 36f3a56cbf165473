"""Fashion-MNIST with a small CNN of separable convolutions (32/64/128 filters, BatchNorm).

Xiao et al. 2017 (arXiv:1708.07747) and the benchmark table of github.com/zalandoresearch/fashion-mnist:
small 2-3 layer CNNs reach about 91-93% test accuracy (MNIST's ~99% drops because shirts,
pullovers and coats look alike).

  python -m data_prep.build --dataset=fashion_mnist --output_dir=DATA
  python -m trainer.main --config=configs/fashion_mnist_separable.py --data_dir=DATA --model_dir=RUN

Training evaluates on the validation split each epoch; `--mode=eval` on the same command
reports the best model on the test split (model_dir/eval/).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "separable_cnn"
    config.image_size = (28, 28)
    config.normalization = "dataset"
    config.global_batch_size = 128
    config.epochs = 30
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    return config
