"""Data in and out: the Image wire format, rosbag2 bags, the CameraInfo pairing rule, the disk
cache and the DeepFluoro dataset. Above geometry; no rclpy (bags go through ``rosbags``).
"""
