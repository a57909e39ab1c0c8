# Source this file (bash) to enter the project environment built by tools/bootstrap.py:
# the virtual environment, the ROS 2 Kilted wheels and the local interface overlay (vision_msgs).
# On a machine with a ROS 2 distribution, source /opt/ros/$ROS_DISTRO/setup.bash and your colcon
# workspace instead; this file is for machines without ROS.
_vlt_root="$(builtin cd "$(dirname "${BASH_SOURCE[0]}")/.." > /dev/null && pwd)"
export VLT_ROOT="$_vlt_root"
export VIRTUAL_ENV="${VLT_VENV:-$_vlt_root/.venv}"
export PATH="$VIRTUAL_ENV/bin:$PATH"
# The PyPI ROS wheels install into the venv but do not register it as an ament prefix.
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
_vlt_overlay="${VLT_OVERLAY:-$_vlt_root/.ros_overlay}/install"
if [ -f "$_vlt_overlay/local_setup.bash" ]; then
  # shellcheck disable=SC1091
  . "$_vlt_overlay/local_setup.bash"
fi
# Name the middleware explicitly: the PyPI wheels ship Fast DDS only.
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export PYTHONPATH="$_vlt_root${PYTHONPATH:+:$PYTHONPATH}"
unset _vlt_root _vlt_overlay
