"""pip install of the Python half (development venv); a ROS workspace builds with CMakeLists.txt."""
from setuptools import find_packages, setup

setup(
    name="rayemb_ros",
    version="0.1.0",
    description="C-arm pose from fluoroscopy by 2D/3D registration with ray embeddings",
    packages=find_packages(include=["rayemb_ros", "rayemb_ros.*"]),
    package_data={"rayemb_ros": ["checkpoints/*.pt", "checkpoints/*.json"]},
    python_requires=">=3.10",
    entry_points={"console_scripts": ["rayemb = rayemb_ros.cli:main"]},
)
