r"""Launch ``sap_node`` (a lifecycle node that starts itself) in namespace ``sap``.

Example::

    ros2 launch sap_ros sap.launch.py image_topic:=/equirectangular/image \\
        checkpoint:=$HOME/models/sam2.1_hiera_tiny.pt

Arguments: ``namespace`` (default ``sap``), ``params_file`` (default the installed
``config/sap.yaml``, found through the ament index), ``image_topic`` (the camera's ERP topic; with
``compressed:=true`` its ``/compressed`` sibling is used), ``compressed``, and ``checkpoint`` /
``device``, which override the params file only when given.
"""
# 'launch' is this repo's launch/ folder to ruff's isort, the ROS package to Python.
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ('namespace', 'sap', 'Namespace of the node and its topics (/<namespace>/masks, ...)'),
    ('params_file', PathJoinSubstitution([FindPackageShare('sap_ros'), 'config', 'sap.yaml']),
     'YAML with sap_node parameters (key /**/sap_node)'),
    ('image_topic', '/camera/image', 'The camera ERP topic (sensor_msgs/Image); with '
     'compressed:=true, <image_topic>/compressed (sensor_msgs/CompressedImage) is used'),
    ('compressed', 'false', 'Subscribe to the compressed (jpeg/png) image topic'),
    ('checkpoint', '', 'SAM2 checkpoint path (model.checkpoint); empty keeps the params file '
     'value'),
    ('device', '', 'auto | cpu | cuda | cuda:N | mps (model.device); empty keeps the params file '
     'value'),
)


def _node(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    compressed = value['compressed'].strip().lower() in ('true', '1', 'yes')
    overrides = {'input.compressed': compressed}
    if value['checkpoint']:
        overrides['model.checkpoint'] = value['checkpoint']
    if value['device']:
        overrides['model.device'] = value['device']
    if compressed:
        remappings = [('image/compressed', value['image_topic'] + '/compressed')]
    else:
        remappings = [('image', value['image_topic'])]
    return [LifecycleNode(package='sap_ros', executable='sap_node', name='sap_node',
                          namespace=value['namespace'], output='screen',
                          parameters=[value['params_file'], overrides],
                          remappings=remappings)]


def generate_launch_description():
    """Declare the arguments and the node."""
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, default, description in ARGUMENTS]
        + [OpaqueFunction(function=_node)])
