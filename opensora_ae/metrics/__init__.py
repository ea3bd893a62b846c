"""Video reconstruction metrics, batched torch: one value per frame (FloLPIPS: per frame pair)."""

from opensora_ae.metrics.flolpips import flolpips, flolpips_from_maps, flow_difference, flow_weighted_sum
from opensora_ae.metrics.lpips import (build_lpips, default_alexnet_path, lpips_distance, lpips_from_maps,
                                      lpips_layer_maps)
from opensora_ae.metrics.psnr import PSNR_CAP_DB, psnr
from opensora_ae.metrics.pwcnet import PWCNet, load_pwcnet
from opensora_ae.metrics.ssim import ssim

__all__ = [
    "PSNR_CAP_DB",
    "PWCNet",
    "build_lpips",
    "default_alexnet_path",
    "flolpips",
    "flolpips_from_maps",
    "flow_difference",
    "flow_weighted_sum",
    "load_pwcnet",
    "lpips_distance",
    "lpips_from_maps",
    "lpips_layer_maps",
    "psnr",
    "ssim",
]
