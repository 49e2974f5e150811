"""The thin ROS 2 shell: the node, message conversion, the DDS harness (``graph``), playing a
bag through the node, and the demo. The only package that imports rclpy.
"""
