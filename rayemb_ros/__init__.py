"""rayemb_ros: C-arm pose from fluoroscopy by ray-embedding 2D/3D registration.

Everything outside `rayemb_ros.ros` is ROS-free and runs from plain Python.
"""
# The generated interfaces (rayemb_ros.msg, rayemb_ros.srv) may be installed in another
# directory named rayemb_ros (the development venv's site-packages); find them there too.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
