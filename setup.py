"""recbole-mtl: multi-task recommendation models for RecBole on TorchRec embeddings.

The stack pins that work together (see README "Install"); torchrec and recbole are installed with
--no-deps by the Makefile (their metadata would pull the CUDA fbgemm-gpu and ray).
"""

from setuptools import find_packages, setup

setup(
    name="recbole-mtl",
    version="0.1.0",
    description="Multi-task learning (interest, category, next item) for RecBole on TorchRec/FBGEMM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recbole_mtl", "recbole_mtl.*"]) + ["recbole_mtl.properties"],
    # properties/ lives at the top of the checkout and is installed inside the package.
    package_dir={"recbole_mtl.properties": "properties"},
    package_data={"recbole_mtl.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml", "search/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.6",
        "numpy<2",
        "pandas<2.3",
        "scipy<1.14",
        "scikit-learn<1.6",
        "pyyaml",
        "tqdm",
        "tensordict",
        "torchmetrics==1.0.3",
        "pyre-extensions",
    ],
    entry_points={"console_scripts": ["recbole-mtl=recbole_mtl.cli:console_main"]},
)
