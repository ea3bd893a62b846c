"""Video reconstruction metrics, batched torch: one value per frame (FloLPIPS: per frame pair); FVD per set."""

from opensora_ae.metrics.flolpips import flolpips, flolpips_from_maps, flow_difference, flow_weighted_sum
from opensora_ae.metrics.fvd import FVDSet, frechet_distance, load_i3d
from opensora_ae.metrics.i3d import InceptionI3d
from opensora_ae.metrics.lpips import (build_lpips, default_alexnet_path, lpips_distance, lpips_from_maps,
                                      lpips_layer_maps)
from opensora_ae.metrics.psnr import PSNR_CAP_DB, psnr
from opensora_ae.metrics.pwcnet import PWCNet, load_pwcnet
from opensora_ae.metrics.ssim import ssim

__all__ = [
    "FVDSet",
    "InceptionI3d",
    "PSNR_CAP_DB",
    "PWCNet",
    "build_lpips",
    "default_alexnet_path",
    "flolpips",
    "flolpips_from_maps",
    "flow_difference",
    "flow_weighted_sum",
    "frechet_distance",
    "load_i3d",
    "load_pwcnet",
    "lpips_distance",
    "lpips_from_maps",
    "lpips_layer_maps",
    "psnr",
    "ssim",
]
