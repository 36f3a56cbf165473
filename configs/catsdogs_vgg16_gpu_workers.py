"""catsdogs_vgg16 on several GPU machines: a Vertex AI custom job with MultiWorkerMirroredStrategy.

Vertex AI sets TF_CONFIG on every replica (chief = worker 0); data and model_dir live in
Cloud Storage so every worker reads the same shards and the chief writes the checkpoints.
Mixed precision `auto` becomes mixed_float16 on GPUs of compute capability >= 7 (T4, V100, A100, L4).
The global batch grows with the replicas; the learning rates grow with it (linear scaling).
Target: catsdogs_vgg16's 96.8% test accuracy (Chollet 5.3, 2,000-image subset), in less time.
Step-by-step commands: BUILD_NOTES.md, "Trainer on the cloud".

  python -m trainer.main --config=configs/catsdogs_vgg16_gpu_workers.py \
      --data_dir=gs://BUCKET/datasets/catsdogs --model_dir=gs://BUCKET/runs/vgg16-$(date +%s)
"""

from configs import catsdogs_vgg16

REPLICAS = 8  # E.g. 2 machines x 4 GPUs; set to the job's total GPU count.


def get_config():
    config = catsdogs_vgg16.get_config()
    config.strategy = "multi_worker_mirrored"
    config.mixed_precision = "auto"
    config.global_batch_size = 20 * REPLICAS
    config.learning_rate *= REPLICAS
    config.fine_tune.learning_rate *= REPLICAS
    config.checkpoint_every_steps = 200  # Preemptible VMs: lose at most a few minutes.
    return config
