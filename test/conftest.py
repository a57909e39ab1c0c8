"""Test-suite wide set-up: ROS isolation for graph tests, tiers as markers.

Every ROS-graph test (marker ``ros``) must run inside a private network namespace with only loopback up, so that
no DDS packet can leave the machine; ``./vlt test`` runs pytest that way. Outside such a namespace those tests
fail (they are never silently skipped).
"""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

# Inherited by every node and fixture process the tests start.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 100))
os.environ.setdefault("ROS_HOME", tempfile.mkdtemp(prefix="vlt_ros_home_"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# Tests share 2 cores with each other; keep torch / BLAS from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def network_is_private() -> bool:
    """True when this process's network namespace has no interface but loopback."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ros") and not network_is_private():
        pytest.fail(
            "ROS graph tests run only inside a private network namespace (DDS must not leave this machine): "
            "use ./vlt test, or unshare -n sh -c 'ip link set lo up && exec pytest ...'",
            pytrace=False,
        )
