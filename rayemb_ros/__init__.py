"""rayemb_ros: C-arm pose from fluoroscopy by ray-embedding 2D/3D registration.

Layers, lowest first (a module imports only from its own layer or lower ones; test/test_architecture.py
checks it): params and errors; geometry; io; imaging; learning; estimation; evaluation; ros (the only one
that imports rclpy); cli (the command line, above both).
"""
# The generated interfaces (rayemb_ros.msg, rayemb_ros.srv) may be installed in another
# directory named rayemb_ros (the development venv's site-packages); find them there too.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
