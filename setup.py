"""ament_python / pip setup for sap_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'sap_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    # The nano model yaml that sap_train ships for tests and CPU experiments.
    package_data={'sap_ros.train': ['configs/*.yaml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
    ],
    # What pip users need. ROS users get the ROS packages and the Python packages with a Debian
    # key from package.xml (rosdep); torch, sam2, hydra-core, iopath, pooch and the evaluation
    # tools come from pip either way (see package.xml and README "Running it"). sam2 itself is
    # installed with --no-deps (its declared torchvision and CUDA torch are not needed for the
    # video path), so it is not listed here: pip install --no-deps sam2==1.1.0.
    install_requires=['setuptools', 'numpy', 'opencv-python-headless', 'pyyaml', 'tqdm',
                      'pooch', 'torch', 'hydra-core', 'iopath', 'pillow'],
    extras_require={
        'eval': ['rosbags', 'scipy', 'matplotlib', 'py360convert'],
        'test': ['pytest'],
        'dev': ['pytest', 'ruff', 'mypy'],
    },
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='sap_ros maintainers',
    maintainer_email='sap-ros@example.com',
    description='SAM2 segmentation of 360-degree equirectangular camera streams for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'sap_node = sap_ros.ros.node:main',
            'sap_replay = sap_ros.eval.replay:main',
            'sap_synth = sap_ros.synth.cli:main',
            'sap_bench = sap_ros.bench.cli:main',
            'sap_weights = sap_ros.engine.weights_cli:main',
            'sap_eval = sap_ros.eval.dataset:main',
            'sap_train = sap_ros.train.cli:main',
        ],
    },
)
