# Run bookkeeping shared by the demo training configs (configs/vae/train/demo_*.py): the sample clips of
# `python -m opensora_ae.data.samples OUT` (the demo passes --dataset.data_path), single process, seeded; each
# config sets its model, clip size, batch, optimizer, losses and number of steps.
dataset = dict(
    type="video_text",
    transform_name="resize_crop",
    data_path="outputs/demo/data/train.csv",
)
num_workers = 0

lr_scheduler = dict(warmup_steps=20)
grad_clip = 1.0

dtype = "fp32"
plugin = "ddp"
device = "auto"
seed = 42
outputs = "outputs/demo"
epochs = 100000  # runs end at max_steps: an epoch of the 15 demo clips is one step
log_every = 10
ckpt_every = 100
keep_n_latest = 2
wandb = False
