"""Installable package of the Cinder driver (Debian: python3-setuptools)."""
from setuptools import setup

setup(
    name='sharedlvm-cinder',
    version='1.0.0',
    description='Cinder volume driver for shared LVM (lvmlockd + sanlock) '
                'managed by sharedlvm-operator',
    license='Apache-2.0',
    packages=['sharedlvm_cinder'],
    python_requires='>=3.9',
    # Debian packages: python3-cinder, python3-kubernetes.
    install_requires=['kubernetes'],
)
