"""rayemb_node: the ROS 2 shell around ``rayemb_ros.estimation.runner.Runner``.

It translates messages to the core's types and back, and nothing else: pairing frames with
intrinsics, dropping stale frames, serialising loads and estimates and keeping the health
record all happen in the runner. Topics, frames and units: the README's Interfaces section.

Threads: the image and CameraInfo callbacks share one callback group and only decode and
hand over; ~/load_volume has its own group, so a load that takes seconds never delays image
handling; the estimator runs on the runner's worker thread, which also publishes results.
"""

from __future__ import annotations

import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from rayemb_ros.io.images import ImageError
from rayemb_ros.msg import LandmarkArray
from rayemb_ros.errors import InputError
from rayemb_ros.evaluation.overlay import draw_landmarks
from rayemb_ros.params import ParamError, Params
from rayemb_ros.ros import convert
from rayemb_ros.estimation.runner import Frame, Health, Level, PathRefused, Result, Runner, confine
from rayemb_ros.srv import LoadVolume

NODE_NAME = "rayemb_node"
# A best-effort reader matches reliable and best-effort writers alike; depth 1 keeps only
# the newest image in the middleware too, so nothing queues up behind a slow estimate.
IMAGE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
# CameraInfos are small; a few in flight let each image find the one with its stamp.
CAMERA_INFO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
TF_QOS = QoSProfile(depth=100)  # what tf2_ros' broadcaster uses
DIAGNOSTICS_PERIOD_S = 1.0
# Parameters every rclpy node has: not ours to validate.
_RCLPY_PARAMETERS = ("use_sim_time", "start_type_description_service")


class RayEmbNode(Node):
    def __init__(self, **kwargs):
        # Declaring every override lets us refuse unknown (misspelt) parameter names.
        super().__init__(NODE_NAME, automatically_declare_parameters_from_overrides=True, **kwargs)
        try:
            self.params = self._read_params()
            # Imported here, after the parameters passed: it pulls in torch, which takes seconds.
            from rayemb_ros.estimation.estimator import Estimator

            estimator = Estimator(self.params)
        except BaseException:
            super().destroy_node()  # else rclpy's shutdown would tear down a half-built node
            raise
        self.add_on_set_parameters_callback(self._refuse_changes)
        self._tf = self.create_publisher(TFMessage, "/tf", TF_QOS)
        self._pose = self.create_publisher(PoseStamped, "~/pose", 10)
        self._pose_covariance = self.create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", 10)
        self._landmarks = self.create_publisher(LandmarkArray, "~/landmarks", 10)
        self._markers = self.create_publisher(MarkerArray, "~/markers", 10)
        self._overlay = self.create_publisher(Image, "~/overlay", 10) if self.params.publish_overlay else None
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._runner = Runner(estimator, self.params, self._publish_result, self._report)

        frames = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, "/carm/image", self._on_image, IMAGE_QOS, callback_group=frames)
        self.create_subscription(
            CameraInfo, "/carm/camera_info", self._on_camera_info, CAMERA_INFO_QOS, callback_group=frames
        )
        # A rough pose from outside (the C-arm's angle readout, the robot): it starts tracking.
        self.create_subscription(PoseStamped, "~/pose_prior", self._on_pose_prior, 10, callback_group=frames)
        self.create_service(
            LoadVolume, "~/load_volume", self._on_load_volume, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.create_timer(DIAGNOSTICS_PERIOD_S, lambda: self._publish_diagnostics(self._runner.health))
        if self.params.volume:
            self._runner.submit_load(self.params.volume)
        then = f"preloading {self.params.volume!r}" if self.params.volume else "waiting for ~/load_volume"
        self.get_logger().info(f"ready (device {estimator.device}, volume_root {self.params.volume_root!r}): {then}")
        if not estimator.pose_grade.navigation:
            self.get_logger().warning(f"poses will be advisory-grade, not navigation-grade: {'; '.join(estimator.pose_grade.reasons)}")

    def stop(self) -> None:
        """Stop estimating and loading (idempotent); the node stays on the graph."""
        self._runner.close()

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()

    # --- parameters: read once at start ---

    def _read_params(self) -> Params:
        """Params from the declared ROS parameters; ParamError for any bad one."""
        for name, default in Params().as_dict().items():
            if not self.has_parameter(name):
                self.declare_parameter(name, default)
        given = {
            name: p.value
            for name, p in self.get_parameters_by_prefix("").items()
            if name not in _RCLPY_PARAMETERS and not name.startswith("qos_overrides.")
        }
        params = Params.from_mapping(given)
        if params.volume:
            try:
                confine(params.volume, params.volume_root)
            except PathRefused as exc:
                raise ParamError(f"volume: {exc}") from exc
        return params

    def _refuse_changes(self, parameters: list[Parameter]) -> SetParametersResult:
        ours = [p.name for p in parameters if p.name in Params.__dataclass_fields__]
        if ours:
            return SetParametersResult(successful=False, reason=f"{', '.join(ours)}: read at start; restart the node")
        return SetParametersResult(successful=True)

    # --- inputs ---

    def _on_image(self, msg: Image) -> None:
        try:
            image = convert.image_to_array(msg)
        except ImageError as exc:
            self._runner.reject(str(exc))
            return
        self._runner.submit(Frame(image, convert.stamp_ns(msg.header), time.monotonic(), tag=msg.header))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            K = convert.camera_info_K(msg)
        except ImageError as exc:
            self.get_logger().warning(f"CameraInfo ignored: {exc}", throttle_duration_sec=5.0)
            return
        self._runner.camera_info(convert.stamp_ns(msg.header), K, msg.height, msg.width)

    def _on_pose_prior(self, msg: PoseStamped) -> None:
        self._runner.pose_prior(convert.pose_to_matrix(msg.pose), convert.stamp_ns(msg.header), msg.header.frame_id)

    def _on_load_volume(self, request: LoadVolume.Request, response: LoadVolume.Response) -> LoadVolume.Response:
        try:
            info = self._runner.load_volume(request.path)
        except Exception as exc:  # refused, unreadable or failing: answered, never a crash
            response.success = False
            response.message = str(exc) or type(exc).__name__
            return response
        response.success = True
        response.message = f"loaded {info.path}: {info.num_landmarks} landmarks in {info.load_seconds:.1f} s"
        response.num_landmarks = info.num_landmarks
        response.load_seconds = info.load_seconds
        return response

    # --- outputs (called by the runner) ---

    def _publish_result(self, result: Result) -> None:
        image_header = result.frame.tag
        ct_header = Header(stamp=image_header.stamp, frame_id=self.params.ct_frame)
        estimate = result.estimate
        if estimate.ok:
            T = estimate.T_ct_source
            self._tf.publish(TFMessage(transforms=[convert.transform_stamped(T, ct_header, self.params.source_frame)]))
            self._pose.publish(convert.pose_stamped(T, ct_header))
            if estimate.covariance is not None:
                self._pose_covariance.publish(convert.pose_with_covariance(T, estimate.covariance, ct_header))
        self._landmarks.publish(convert.landmarks_msg(estimate.landmarks, image_header))
        height, width = result.frame.image.shape
        self._markers.publish(convert.markers_msg(estimate, result.K, height, width, self.params.sdd_mm, ct_header))
        if self._overlay is not None:
            overlay = draw_landmarks(result.frame.image, estimate.landmarks)
            self._overlay.publish(convert.array_to_image(overlay, "rgb8", image_header))

    def _report(self, health: Health, log: bool) -> None:
        # One call site per severity: rclpy refuses to log one site at two severities.
        if log and health.level == Level.OK:
            self.get_logger().info(health.message)
        elif log and health.level == Level.WARN:
            self.get_logger().warning(health.message)
        elif log:
            self.get_logger().error(health.message)
        self._publish_diagnostics(health)

    def _publish_diagnostics(self, health: Health) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics.publish(convert.diagnostics_msg(health, f"{self.get_name()}: registration", header))


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM: 0, or 2 when it cannot start (a bad parameter, an
    unreadable checkpoint). ``argv`` as rclpy takes it (None: sys.argv)."""
    rclpy.init(args=argv)
    try:
        node = RayEmbNode()
    except InputError as exc:  # a bad parameter, an unreadable checkpoint: one clear line (a bug keeps its traceback)
        what = "bad parameter" if isinstance(exc, ParamError) else "cannot start"
        rclpy.logging.get_logger(NODE_NAME).fatal(f"{what}: {str(exc).splitlines()[0]}")
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # rclpy's signal handlers shut the context down: a normal stop
    finally:
        node.stop()  # first, so that no callback still waits on the worker
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def default_params_file() -> Path:
    """config/rayemb.yaml of the checkout, else of the installed package's share directory."""
    checkout = Path(__file__).resolve().parents[2] / "config" / "rayemb.yaml"
    if checkout.is_file():
        return checkout
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("rayemb_ros")) / "config" / "rayemb.yaml"
