"""LatCPB: coarse-grained (C-alpha) protein backmapping with latent diffusion, for MDAnalysis and OpenMM users."""
from setuptools import find_packages, setup

setup(
    name="latcpb",
    version="0.1.0",
    description="Backmap C-alpha protein structures and trajectories to all-atom ones with a latent diffusion model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["latcpb", "latcpb.*"]) + ["latcpb_openmm"],
    package_dir={"latcpb_openmm": "openmm_plugin/latcpb_openmm"},
    package_data={"latcpb": ["geometry/data/*.json", "metrics/data/*.json", "weights/*.pt", "weights/*.json", "configs/*.json"]},
    install_requires=[
        "torch>=2.1",
        "e3nn>=0.5",
        "mdanalysis>=2.7",
        "numpy>=1.24",
        "scipy>=1.10",
        "click>=8.0",
        "tqdm>=4.60",
        "dask[distributed]>=2023.1",
    ],
    extras_require={
        "openmm": ["openmm>=8.0", "pdbfixer>=1.9"],
        "plots": ["matplotlib>=3.6"],
        "bench": ["pulchra>=1.0", "matplotlib>=3.6"],
        "cluster": ["torch-cluster>=1.6"],
        "test": ["pytest>=7", "hypothesis>=6", "mdanalysistests>=2.7", "openmm>=8.0", "pdbfixer>=1.9",
                 "matplotlib>=3.6", "openabc>=1.0", "pandas<3"],
    },
    entry_points={
        "console_scripts": [
            "latcpb-backmap=latcpb.cli.backmap:main",
            "latcpb-train=latcpb.cli.train:main",
            "latcpb-eval=latcpb.cli.evaluate:main",
        ]
    },
)
