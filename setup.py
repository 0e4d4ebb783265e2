from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "nnunet_quantif" / "__init__.py").read_text().split('__all__')[0], version)

setup(
    name="nnunet-quantif",
    version=version["__version__"],
    description="Click-guided whole-body PET/CT lesion segmentation (QuantIF, autoPET IV) as an nnU-Net v2 plugin",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["nnunet_quantif", "nnunet_quantif.*"]) + ["nnunet_quantif.configs"],
    package_dir={"nnunet_quantif.configs": "configs"},
    package_data={"nnunet_quantif": ["nnunet_ext/*.py"], "nnunet_quantif.configs": ["*.json", "*.md"],
                  "nnunet_quantif.napari": ["napari.yaml"],
                  # the browser viewer's built bundle (viewer/ -> scripts/build_viewer.sh), served by quantif serve
                  "nnunet_quantif.server": ["static/*"]},
    include_package_data=True,
    install_requires=[
        "nnunetv2>=2.8,<2.9",
        "torch>=2.1",
        "dynamic-network-architectures>=0.4",
        "batchgeneratorsv2>=0.3",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        "SimpleITK>=2.2",
        "connected-components-3d>=3.12",
        "totalsegmentator>=2.4",
        "matplotlib>=3.6",
        "tqdm>=4.60",
        "numpy>=1.24",
        "scipy>=1.10",
    ],
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3.2", "ruff>=0.5", "hypothesis>=6.100",
                             "pydicom>=3", "highdicom>=0.22",
                             # dcmqi's tid1500reader: an independent reader of the DICOM SR (tests/test_dicom_sr.py)
                             "dcmqi>=1.5",
                             # the session server's tests (FastAPI's TestClient needs httpx)
                             "fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "httpx>=0.27",
                             # the viewer's browser test drives Debian's Chromium through /usr/bin/chromedriver
                             "selenium>=4.10"],
                    "dicom": ["pydicom>=3", "highdicom>=0.22"],
                    # quantif serve: the session server (FastAPI on uvicorn; multipart uploads)
                    "server": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9"],
                    # the napari plugin (quantif view); napari-test adds what its Qt tests need (Xvfb from the OS)
                    "napari": ["napari[pyqt5]>=0.5"],
                    "napari-test": ["napari[pyqt5]>=0.5", "pytest-qt>=4.2", "pytest-xvfb>=3"]},
    entry_points={
        "console_scripts": [
            "quantif=nnunet_quantif.cli:main",
            # nnUNetv2_predict-compatible folder prediction with adaptive mirroring and post-processing
            "nnUNetv2_predict_quantif=nnunet_quantif.cli.nnunet_predict:main",
        ],
        # the npe2 manifest of the napari plugin (nnunet_quantif.napari)
        "napari.manifest": ["nnunet-quantif = nnunet_quantif.napari:napari.yaml"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
