"""`make demo`: the cats/dogs CNN at 64x64 for a few epochs, so the whole product runs in minutes on 2 CPU cores.

On the sample folder of `python -m data_prep.sample_data` (crops of two photographs, easy to
tell apart) it reached 100% validation accuracy in 2 of its 6 epochs here; that says the
product works, not how well a model does on real cats and dogs (see catsdogs_cnn.py, 82%, and
catsdogs_vgg16.py, 97%, for the literature's figures).

  python -m trainer.main --config=configs/catsdogs_demo.py --data_dir=DATA --model_dir=RUN \
      --strategy=mirrored --num_cpu_devices=2
"""

from configs import catsdogs_cnn


def get_config():
    config = catsdogs_cnn.get_config()
    config.image_size = (64, 64)
    config.epochs = 6
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.steps_per_loop = 10
    # Its validation split is ~15 images: accuracy reaches 100% at once and stops ranking epochs, so the best model
    # (evaluated and exported) would be the first epoch's; the loss keeps ranking them.
    config.best_metric = "val_loss"
    config.best_mode = "min"
    return config
