"""Packaging for mtlcc-tf: multi-temporal land cover classification with recurrent encoders."""

import setuptools

setuptools.setup(
    name="mtlcc-tf",
    version="0.1.0",
    description=(
        "TensorFlow 2 / Keras 3 bidirectional ConvLSTM / ConvGRU crop mapping from raw, "
        "cloudy Sentinel-2 time series (after Russwurm & Koerner 2018)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(
        include=["mtlcc_tf", "mtlcc_tf.*", "data_pipeline", "data_pipeline.*"]
    ),
    # The fused kernel's source: compiled on the user's machine on first use (mtlcc_tf/ops).
    package_data={"mtlcc_tf.ops": ["*.cc"]},
    install_requires=[
        "numpy>=1.26",
        "absl-py>=2.1",
        "matplotlib>=3.8",
        "keras>=3.5",
        "tensorboard>=2.16",  # tensorflow-cpu no longer pulls it in
        "scikit-learn>=1.3",  # the classical baseline (mtlcc_tf.classical)
        # GDAL's Python bindings must match the system library (`gdal-config --version`) and be
        # built against the installed numpy; scripts/setup.sh installs them that way.
    ],
    extras_require={
        # TensorFlow comes as an extra so that images which already ship it (docker/Dockerfile.gpu)
        # do not pull a second copy.
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "pre-commit>=3"],
    },
)
