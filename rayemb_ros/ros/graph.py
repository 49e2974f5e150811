"""Talking to `rayemb node` over DDS from Python: the one harness behind `rayemb replay
--via-node`, `make demo` and the node tests.

* ``Domain``: a random ROS_DOMAIN_ID kept on loopback, so that runs (and other people's on the
  same machine) never hear each other;
* ``NodeProcess``: `rayemb node` in its own process on that domain, its output in a log file;
* ``Graph``: our own participant on the domain, spun on a background thread, with ``Inbox``es
  that collect what arrives on a topic, publishers and service calls;
* ``wait_until``: waits on an event (a message, a counter), never a fixed sleep, and gives up
  with a ``GraphError`` that says what it waited for.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile


class GraphError(RuntimeError):
    """A wait that ended without what it waited for: a timeout, or the node exited."""


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.02,
               abort: Callable[[], str | None] | None = None) -> Any:
    """The first truthy value of ``predicate()``. GraphError naming ``what`` on timeout, or as
    soon as ``abort()`` says why waiting is pointless (e.g. the node exited)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        why = abort() if abort is not None else None
        if why:
            raise GraphError(f"{why} while waiting for {what}")
        if time.monotonic() > deadline:
            raise GraphError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


@dataclass(frozen=True)
class Domain:
    id: int

    @classmethod
    def random(cls) -> Domain:
        # 1..100: valid for Fast DDS's port mapping; 0 is everyone's default.
        return cls(random.SystemRandom().randint(1, 100))

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment on the domain, kept on loopback, plus ``extra``."""
        return {**os.environ, "ROS_DOMAIN_ID": str(self.id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
                "PYTHONUNBUFFERED": "1", **extra}


class NodeProcess:
    """`rayemb node ARGS...` in its own process on ``domain``; its output goes to ``log_path``."""

    def __init__(self, args: list[str], domain: Domain, log_path: Path, **env: str):
        self.args = args
        self.log_path = log_path
        self._env = domain.env(**env)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rayemb_ros.cli", "node", *self.args],
                                         stdout=log, stderr=subprocess.STDOUT, env=self._env)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self) -> str | None:
        """Why waiting on the node is pointless (it exited); None while it runs."""
        return None if self.alive else f"rayemb node exited (code {self.proc.returncode})"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> int:
        """Signal the node and wait for it (killed when it does not stop in time); its exit code."""
        if self.alive:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Inbox:
    """Messages received on one topic, in order, with their wall-clock receipt times (ns)."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.received_ns: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)
            self.received_ns.append(time.time_ns())

    def snapshot(self, since: int = 0) -> list[Any]:
        with self._lock:
            return self.messages[since:]

    def entries(self, since: int = 0) -> list[tuple[int, Any]]:
        """(receipt time ns, message) from index ``since`` on."""
        with self._lock:
            return list(zip(self.received_ns[since:], self.messages[since:]))

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_for(self, predicate: Callable[[Any], bool], timeout_s: float, what: str, since: int = 0,
                 abort: Callable[[], str | None] | None = None) -> Any:
        """The first message from index ``since`` on for which ``predicate`` holds."""
        return wait_until(lambda: next((m for m in self.snapshot(since) if predicate(m)), None), timeout_s, what,
                          abort=abort)


class Graph:
    """Our own participant on a domain, spinning on a background thread."""

    def __init__(self, domain: Domain, name: str = "rayemb_client"):
        # rclpy reads the discovery range from the environment at init: stay on loopback too.
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain.id)
        self.node = Node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context went down while spinning: closing
                if self.context.ok():
                    raise

    def subscribe(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> Inbox:
        inbox = Inbox()
        self.node.create_subscription(msg_type, topic, inbox, qos)
        return inbox

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile | int = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type: type, name: str, request: Any, timeout_s: float = 60.0,
             abort: Callable[[], str | None] | None = None, ready_timeout_s: float | None = None) -> Any:
        """Call a service and wait for its answer (``ready_timeout_s``, default ``timeout_s``,
        for the service to appear first)."""
        client = self.node.create_client(srv_type, name)
        try:
            wait_until(client.service_is_ready, timeout_s if ready_timeout_s is None else ready_timeout_s,
                       f"service {name}", abort=abort)
            future = client.call_async(request)
            wait_until(future.done, timeout_s, f"an answer from {name}", abort=abort)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(5.0)
        self._executor.shutdown()
        self.node.destroy_node()
