from setuptools import find_packages, setup

setup(
    name="opensora_ae",
    version="0.1.0",
    description="Train, fine-tune, run and evaluate video autoencoders (Video DC-AE, HunyuanVideo VAE, "
    "Open-Sora 1.2 VAE, Open-Sora-Plan CausalVideoVAE).",
    python_requires=">=3.10",
    packages=find_packages(include=["opensora_ae", "opensora_ae.*"]),
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "mmengine-lite",
        "packaging",
        "einops",
        "av>=12",
        "lpips",
        "wandb",
        "tqdm",
        "safetensors",
        "diffusers",
        "numpy",
        "pillow",
        "matplotlib",
        "scikit-video",
    ],
    extras_require={
        "dev": ["pytest", "pytest-timeout", "scikit-image", "scipy"],
    },
)
