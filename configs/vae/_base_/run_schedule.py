# Run bookkeeping shared by the release fine-tuning configs (causal_vae.py, hunyuan_vae.py under configs/vae/train):
# 10 epochs, a log record every 10 steps, a checkpoint every 1000 (5 kept), EMA 0.999, no wandb.
seed = 42
outputs = "outputs"
epochs = 10
log_every = 10
ckpt_every = 1000
keep_n_latest = 5
ema_decay = 0.999
wandb = False
