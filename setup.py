"""gesture_jax: speech-driven 3D full-body gesture generation in JAX/Flax.

Runtime dependencies are pinned in requirements.txt; test/parity extras (`[dev]`) pin
torch to the CPU wheel so that nothing pulls a CUDA build.
"""
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent


def _requirements(name: str) -> list[str]:
    lines = (_HERE / name).read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


setup(
    name="gesture_jax",
    version="0.1.0",
    description="Speech-driven 3D full-body gesture generation (Persona-Gestor and kin) in JAX/Flax",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["gesture_jax", "gesture_jax.*", "data_prep", "data_prep.*", "configs"]),
    install_requires=_requirements("requirements.txt"),
    extras_require={"dev": _requirements("requirements-dev.txt")},
    include_package_data=True,
)
