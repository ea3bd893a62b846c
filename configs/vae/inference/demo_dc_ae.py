# Reconstruct the held-out sample clips with the tiny Video DC-AE trained by
# configs/vae/train/demo_dc_ae.py (same model, same 8-frame 32x32 clips), losslessly so that the metrics
# measure the model only.
#
#   python scripts/vae/inference.py configs/vae/inference/demo_dc_ae.py \
#       --model.from_pretrained outputs/demo/train/epoch*-global_step*   # a checkpoint folder of the demo run

# The model is the training config's (tests/test_inference.py checks it); from_pretrained must be passed.
_base_ = ["../_base_/demo_dc_ae_model.py", "../_base_/demo_inference_run.py"]

batch_size = 2

num_frames = 8
resolution = (32, 32)
