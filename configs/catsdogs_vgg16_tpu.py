"""catsdogs_vgg16 on a Cloud TPU VM (e.g. v4-8 or v5e-8): TPUStrategy, bfloat16.

Run on the TPU VM itself (`--tpu=local`); data and model_dir in Cloud Storage in the TPU's
region. TPUs want large static batches and many steps per host call: every replica gets
global_batch_size / 8 images, and a training batch is always full (drop_remainder).
Target: catsdogs_vgg16's 96.8% test accuracy (Chollet 5.3, 2,000-image subset).
Step-by-step commands: BUILD_NOTES.md, "Trainer on the cloud".

  python -m trainer.main --config=configs/catsdogs_vgg16_tpu.py \
      --data_dir=gs://BUCKET/datasets/catsdogs --model_dir=gs://BUCKET/runs/vgg16-tpu
"""

from configs import catsdogs_vgg16


def get_config():
    config = catsdogs_vgg16.get_config()
    config.strategy = "tpu"
    config.tpu = "local"
    config.mixed_precision = "mixed_bfloat16"
    config.global_batch_size = 256
    config.learning_rate *= 256 / 20
    config.fine_tune.learning_rate *= 256 / 20
    config.steps_per_loop = 200
    config.cache = "none"  # The TPU VM's host memory is shared by the input pipelines of all 8 cores.
    return config
