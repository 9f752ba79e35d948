"""ament_python / pip setup for sap_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'sap_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
    ],
    install_requires=['setuptools', 'numpy', 'opencv-python-headless', 'pyyaml', 'tqdm'],
    zip_safe=True,
    maintainer='sap_ros maintainers',
    maintainer_email='sap-ros@example.com',
    description='SAM2 segmentation of 360-degree equirectangular camera streams for ROS 2.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'sap_node = sap_ros.ros.node:main',
            'sap_replay = sap_ros.eval.replay:main',
            'sap_synth = sap_ros.synth.cli:main',
            'sap_bench = sap_ros.bench.cli:main',
            'sap_eval = sap_ros.eval.dataset:main',
        ],
    },
)
