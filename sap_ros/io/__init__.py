"""ROS-free codecs (runtime): image and PointCloud2 payloads, coloured overlays."""
