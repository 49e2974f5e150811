"""Image encodings the contract does not accept (the node and the bag reader refuse them)."""

from rayemb_ros.io.images import ENCODINGS

# The encodings of ROS's sensor_msgs/image_encodings.hpp that the contract does not accept.
_NAMED = ["rgba8", "bgra8", "rgb16", "bgr16", "rgba16", "bgra16", "mono32", "yuv422", "yuv422_yuy2", "uyvy",
          "nv21", "nv24", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg16", "bayer_grbg16", "jpeg", "", "MONO8"]
_GENERIC = [f"{bits}{kind}C{n}" for bits, kinds in (("8", "US"), ("16", "US"), ("32", "SF"), ("64", "F"))
            for kind in kinds for n in (1, 2, 3, 4)]
UNSUPPORTED = [e for e in _NAMED + _GENERIC if e not in ENCODINGS]
