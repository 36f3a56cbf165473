"""Cats vs dogs with VGG16: feature extraction, then fine-tuning from block5_conv1.

Chollet, Deep Learning with Python (1st ed.), 5.3 (notebook 5.3-using-a-pretrained-convnet):
cats_and_dogs_small (2,000 train / 1,000 validation / 1,000 test images, 150x150) with
augmentation; phase 1 trains the Dense(256) head on the frozen ImageNet base (RMSprop 2e-5,
30 epochs of 100 steps of 20, about 96% validation accuracy), phase 2 unfreezes block5
(RMSprop 1e-5, 100 epochs) and reaches 96.8% test accuracy ("97%").

  python -m data_prep.build --dataset=catsdogs --input_dir=kagglecatsanddogs --output_dir=DATA
  python -m trainer.main --config=configs/catsdogs_vgg16.py --data_dir=DATA --model_dir=RUN
  python -m trainer.main --config=configs/catsdogs_vgg16.py --data_dir=DATA --model_dir=RUN --mode=eval

That figure is for the 2,000-image subset; a default build of the full download trains on ~20,000.

Needs ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (downloaded on first
use when online), or --config.model.weights=/path/to/that/file.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "vgg16_transfer"
    config.model.weights = "imagenet"
    config.model.freeze_base = True
    config.image_size = (150, 150)
    config.normalization = "vgg16"
    config.global_batch_size = 20
    config.epochs = 30
    config.optimizer = "rmsprop"
    config.learning_rate = 2e-5
    config.fine_tune.epochs = 100
    config.fine_tune.optimizer = "rmsprop"
    config.fine_tune.learning_rate = 1e-5
    config.fine_tune.unfreeze_from = "block5_conv1"
    return config
