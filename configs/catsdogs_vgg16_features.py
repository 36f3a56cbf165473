"""Cats vs dogs with VGG16, fast feature extraction: the Dense head trained on the frozen base's stored outputs.

Chollet, Deep Learning with Python (1st ed.), 5.3 (notebook 5.3-using-a-pretrained-convnet), "fast feature
extraction without data augmentation": the ImageNet base runs once over cats_and_dogs_small (2,000 train / 1,000
validation images, 150x150, features 4x4x512), then Flatten-Dense(256)-Dropout(0.5)-sigmoid trains on the features
(RMSprop 2e-5, batch 20, 30 epochs): about 90% validation accuracy, in seconds per epoch. For comparison, the same
head trained end to end on the frozen base with augmentation (configs/catsdogs_vgg16.py, phase 1) reaches about
96%, and fine-tuning block5 after it about 97%.

  python -m data_prep.build --dataset=catsdogs --input_dir=kagglecatsanddogs --output_dir=DATA \
      --split=train:1000/class,validation:500/class,test:500/class   # cats_and_dogs_small
  python -m data_prep.extract_features --data_dir=DATA --output_dir=FEATURES [--weights=imagenet] [--precision=auto]
  python -m trainer.main --config=configs/catsdogs_vgg16_features.py --data_dir=FEATURES --model_dir=HEAD
  # Then fine-tune block5 from this head: phase 1 (the head on the frozen base) has nothing left to do.
  python -m trainer.main --config=configs/catsdogs_vgg16.py --data_dir=DATA --model_dir=RUN \
      --config.init_head_from=HEAD --epochs=0 --config.fine_tune.epochs=100

`--augment_copies=K` also extracts the features of K augmented copies of each training image: feature extraction
with augmentation, which the tutorial can only do the slow way. image_size and normalization must be those the
features were extracted from (extracted at another --input_size: --config.image_size=N,N). HEAD/export/saved_model
takes image bytes: it runs the base the features came from (the weights file recorded in FEATURES/metadata.json,
checked by its sha256), then this head.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = "vgg16_head"
    config.image_size = (150, 150)
    config.normalization = "vgg16"
    config.global_batch_size = 20
    config.epochs = 30
    config.optimizer = "rmsprop"
    config.learning_rate = 2e-5
    return config
